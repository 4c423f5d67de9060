//! The 128-byte unique id (NCCL's size) that names a communicator.
//!
//! Layout: `0..8` magic `MIXCCLID`, `8..10` protocol version (LE), `10..26` secret
//! token, `26` address family (4 or 6), `27..29` port (BE), `29..45` IP address,
//! `45..120` zero except in a grow id (`Communicator::grow_id`): `45` is `b'G'`,
//! `46..54` the FNV-1a of the parent communicator's token (LE), `54..58` the
//! parent's rank count (LE); `120..128` FNV-1a checksum of bytes `0..120` (LE). The checksum
//! turns a corrupted or truncated id into an error instead of a connection to a
//! wrong address.

use crate::bootstrap::root;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::wire::PROTOCOL_VERSION;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

const MAGIC: &[u8; 8] = b"MIXCCLID";
const CHECKED: usize = 120;

/// Names one communicator: magic, protocol version, a random 128-bit secret token and
/// the root's socket address, in 128 bytes. Share it as bytes or as hex text
/// (`to_string()` / `parse()`); every rank passes it to `Communicator::init`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct UniqueId {
    bytes: [u8; UniqueId::BYTES],
}

/// 64-bit FNV-1a; used for the id checksum and to derive tokens from shared strings.
pub(crate) fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// 16 random bytes from the kernel.
pub(crate) fn random_token() -> Result<[u8; 16]> {
    use std::io::Read;
    let mut t = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut t))
        .map_err(|e| Error::io("reading /dev/urandom for the secret token", e))?;
    Ok(t)
}

impl UniqueId {
    /// Size in bytes, as `NCCL_UNIQUE_ID_BYTES`.
    pub const BYTES: usize = 128;

    /// Starts a root rendezvous on the interface `MIXCCL_SOCKET_IFNAME` names (default:
    /// the first non-loopback interface that is up, else loopback) and returns its id.
    pub fn new() -> Result<UniqueId> {
        let config = Config::from_env()?;
        let ip = crate::transport::tcp::pick_interface(config.socket_ifname.as_deref())?;
        UniqueId::bind_with(SocketAddr::new(ip, 0), &config)
    }

    /// Starts a root rendezvous listening on `addr` (port 0 picks a free port), with the
    /// timeout from the environment (`MIXCCL_TIMEOUT`).
    pub fn bind(addr: SocketAddr) -> Result<UniqueId> {
        UniqueId::bind_with(addr, &Config::from_env()?)
    }

    /// Starts a root rendezvous listening on `addr` whose waits are bounded by `config.timeout`.
    pub fn bind_with(addr: SocketAddr, config: &Config) -> Result<UniqueId> {
        let token = random_token()?;
        let bound = root::spawn(addr, token, config)?;
        Ok(UniqueId::from_parts(token, bound))
    }

    /// Builds an id from its parts without starting anything (used when the root address
    /// and token are agreed by other means, e.g. `MIXCCL_ROOT`).
    pub(crate) fn from_parts(token: [u8; 16], addr: SocketAddr) -> UniqueId {
        let mut b = [0u8; UniqueId::BYTES];
        b[0..8].copy_from_slice(MAGIC);
        b[8..10].copy_from_slice(&PROTOCOL_VERSION.to_le_bytes());
        b[10..26].copy_from_slice(&token);
        match addr.ip() {
            IpAddr::V4(ip) => {
                b[26] = 4;
                b[29..33].copy_from_slice(&ip.octets());
            }
            IpAddr::V6(ip) => {
                b[26] = 6;
                b[29..45].copy_from_slice(&ip.octets());
            }
        }
        b[27..29].copy_from_slice(&addr.port().to_be_bytes());
        let sum = fnv1a(&b[..CHECKED]);
        b[CHECKED..].copy_from_slice(&sum.to_le_bytes());
        UniqueId { bytes: b }
    }

    /// Decodes and checks 128 bytes: length, magic, version, checksum, address.
    pub fn from_bytes(bytes: &[u8]) -> Result<UniqueId> {
        let bad = |why: String| Err(Error::InvalidUniqueId(why));
        if bytes.len() != UniqueId::BYTES {
            return bad(format!(
                "expected {} bytes, got {}",
                UniqueId::BYTES,
                bytes.len()
            ));
        }
        if &bytes[0..8] != MAGIC {
            return bad("bad magic (not a mixccl unique id)".into());
        }
        let version = u16::from_le_bytes([bytes[8], bytes[9]]);
        if version != PROTOCOL_VERSION {
            return bad(format!(
                "protocol version {version}, this library speaks {PROTOCOL_VERSION}"
            ));
        }
        let sum = u64::from_le_bytes(bytes[CHECKED..].try_into().expect("8 bytes"));
        if sum != fnv1a(&bytes[..CHECKED]) {
            return bad("checksum mismatch (corrupted id)".into());
        }
        if !matches!(bytes[26], 4 | 6) {
            return bad(format!("unknown address family {}", bytes[26]));
        }
        let mut id = UniqueId {
            bytes: [0; UniqueId::BYTES],
        };
        id.bytes.copy_from_slice(bytes);
        Ok(id)
    }

    /// This id marked as growing the communicator whose token hashes to `parent`
    /// and which has `old_nranks` ranks (see the layout above).
    pub(crate) fn for_grow(mut self, parent: u64, old_nranks: usize) -> UniqueId {
        let b = &mut self.bytes;
        b[45] = b'G';
        b[46..54].copy_from_slice(&parent.to_le_bytes());
        b[54..58].copy_from_slice(&(old_nranks as u32).to_le_bytes());
        let sum = fnv1a(&b[..CHECKED]);
        b[CHECKED..].copy_from_slice(&sum.to_le_bytes());
        self
    }

    /// For a grow id: the hash of the parent's token and the parent's rank count.
    pub(crate) fn grow_parent(&self) -> Option<(u64, usize)> {
        let b = &self.bytes;
        (b[45] == b'G').then(|| {
            (
                u64::from_le_bytes(b[46..54].try_into().expect("8 bytes")),
                u32::from_le_bytes(b[54..58].try_into().expect("4 bytes")) as usize,
            )
        })
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; UniqueId::BYTES] {
        &self.bytes
    }

    /// The root's address.
    pub fn root_addr(&self) -> SocketAddr {
        let b = &self.bytes;
        let port = u16::from_be_bytes([b[27], b[28]]);
        let ip = if b[26] == 4 {
            IpAddr::V4(Ipv4Addr::new(b[29], b[30], b[31], b[32]))
        } else {
            let o: [u8; 16] = b[29..45].try_into().expect("16 bytes");
            IpAddr::V6(Ipv6Addr::from(o))
        };
        SocketAddr::new(ip, port)
    }

    /// The secret token every connection of this communicator must present.
    pub(crate) fn token(&self) -> [u8; 16] {
        self.bytes[10..26].try_into().expect("16 bytes")
    }
}

impl std::fmt::Display for UniqueId {
    /// 256 lower-case hex characters.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in &self.bytes {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for UniqueId {
    /// Shows the root address only: the token is a secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "UniqueId(root {})", self.root_addr())
    }
}

impl std::str::FromStr for UniqueId {
    type Err = Error;

    /// Parses the hex form written by `Display` (surrounding whitespace is ignored).
    fn from_str(s: &str) -> Result<UniqueId> {
        let s = s.trim();
        if s.len() != 2 * UniqueId::BYTES {
            return Err(Error::InvalidUniqueId(format!(
                "expected {} hex characters, got {}",
                2 * UniqueId::BYTES,
                s.len()
            )));
        }
        let mut bytes = [0u8; UniqueId::BYTES];
        for (i, out) in bytes.iter_mut().enumerate() {
            *out = s
                .get(2 * i..2 * i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| Error::InvalidUniqueId(format!("not hex at character {}", 2 * i)))?;
        }
        UniqueId::from_bytes(&bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_bytes_and_hex() {
        let addr: SocketAddr = "10.1.2.3:4567".parse().unwrap();
        let id = UniqueId::from_parts([7; 16], addr);
        assert_eq!(id.root_addr(), addr);
        assert_eq!(id.token(), [7; 16]);
        assert_eq!(UniqueId::from_bytes(id.as_bytes()).unwrap(), id);
        let text = id.to_string();
        assert_eq!(text.len(), 256);
        assert_eq!(text.parse::<UniqueId>().unwrap(), id);
        let v6: SocketAddr = "[fe80::1]:99".parse().unwrap();
        assert_eq!(UniqueId::from_parts([1; 16], v6).root_addr(), v6);
    }

    #[test]
    fn rejects_corrupt_and_truncated_ids() {
        let id = UniqueId::from_parts([7; 16], "127.0.0.1:1".parse().unwrap());
        assert!(matches!(
            UniqueId::from_bytes(&id.as_bytes()[..100]),
            Err(Error::InvalidUniqueId(m)) if m.contains("128")
        ));
        for pos in [0, 9, 12, 27, 60, 127] {
            let mut b = *id.as_bytes();
            b[pos] ^= 0x40;
            assert!(UniqueId::from_bytes(&b).is_err(), "flip at {pos} accepted");
        }
        assert!("zz".parse::<UniqueId>().is_err());
        let mut text = id.to_string();
        text.replace_range(10..12, "g0");
        assert!(text.parse::<UniqueId>().is_err());
        assert!(UniqueId::from_bytes(&[0u8; 128]).is_err());
    }

    #[test]
    fn grow_ids_carry_their_parent() {
        let addr: SocketAddr = "10.1.2.3:4567".parse().unwrap();
        let id = UniqueId::from_parts([7; 16], addr);
        assert_eq!(id.grow_parent(), None);
        let g = id.for_grow(0xfeed_beef, 3);
        assert_eq!(g.grow_parent(), Some((0xfeed_beef, 3)));
        assert_eq!((g.root_addr(), g.token()), (addr, [7; 16]));
        assert_eq!(UniqueId::from_bytes(g.as_bytes()).unwrap(), g);
    }
}
