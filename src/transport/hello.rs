//! The first bytes on every transport connection, one encoder and decoder for all:
//! `magic:[8] version:u16` (the preamble), then for the connections that admit a
//! rank to a listener `token:[16] from:u32 to:u32` (all little-endian). Each
//! transport appends its own fields after these (TCP: lane and lanes; shm: ring
//! capacity) and picks its magic (`MXDATA`, `MXSHM`, `MXRDMA`), so the bytes on
//! the wire are what each transport always sent. Decoding never panics: a
//! stranger's bytes are a [`TransportError`] for the caller to log or return.

use crate::error::TransportError;
use crate::wire::PROTOCOL_VERSION;

/// The communicator tokens a listener admits connections for (a listener serves a
/// communicator and those shrunk or split from it).
#[derive(Debug, Default)]
pub(crate) struct LiveTokens(Vec<[u8; 16]>);

impl LiveTokens {
    /// Admits `token` from now on.
    pub(crate) fn register(&mut self, token: [u8; 16]) {
        if !self.0.contains(&token) {
            self.0.push(token);
        }
    }

    /// Refuses `token` from now on.
    pub(crate) fn forget(&mut self, token: [u8; 16]) {
        self.0.retain(|t| *t != token);
    }

    /// Is `token` admitted?
    pub(crate) fn contains(&self, token: &[u8; 16]) -> bool {
        self.0.contains(token)
    }
}

/// Bytes of the preamble: magic and protocol version.
pub(crate) const PREAMBLE_LEN: usize = 8 + 2;

/// Bytes of a [`Hello`]: preamble, token, sender and receiver rank.
pub(crate) const HELLO_LEN: usize = PREAMBLE_LEN + 16 + 4 + 4;

/// The preamble of a message with `magic`.
pub(crate) fn preamble(magic: &[u8; 8]) -> [u8; PREAMBLE_LEN] {
    let mut b = [0u8; PREAMBLE_LEN];
    b[..8].copy_from_slice(magic);
    b[8..].copy_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    b
}

/// Checks that `b` starts with the preamble of `magic` at this protocol version.
pub(crate) fn check_preamble(magic: &[u8; 8], b: &[u8]) -> Result<(), TransportError> {
    if b.len() < PREAMBLE_LEN || &b[..8] != magic {
        return Err(TransportError::BadMagic);
    }
    let v = u16::from_le_bytes([b[8], b[9]]);
    if v != PROTOCOL_VERSION {
        return Err(TransportError::Version(v));
    }
    Ok(())
}

/// Who is calling whom, in which communicator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Hello {
    /// The communicator's secret token (from the unique id).
    pub token: [u8; 16],
    /// The sender's rank.
    pub from: u32,
    /// The rank the sender means to reach.
    pub to: u32,
}

impl Hello {
    /// Writes the hello with `magic` into the first [`HELLO_LEN`] bytes of `b`.
    pub(crate) fn encode(&self, magic: &[u8; 8], b: &mut [u8]) {
        b[..PREAMBLE_LEN].copy_from_slice(&preamble(magic));
        b[10..26].copy_from_slice(&self.token);
        b[26..30].copy_from_slice(&self.from.to_le_bytes());
        b[30..34].copy_from_slice(&self.to.to_le_bytes());
    }

    /// Reads the hello with `magic` from the first [`HELLO_LEN`] bytes of `b`.
    pub(crate) fn decode(magic: &[u8; 8], b: &[u8]) -> Result<Hello, TransportError> {
        check_preamble(magic, b)?;
        if b.len() < HELLO_LEN {
            return Err(TransportError::Length {
                what: "hello",
                got: b.len(),
                want: HELLO_LEN.to_string(),
            });
        }
        let u32at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        Ok(Hello {
            token: b[10..26].try_into().expect("16 bytes"),
            from: u32at(26),
            to: u32at(30),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAGIC: &[u8; 8] = b"MXTEST\0\0";

    #[test]
    fn hello_layout_is_the_documented_one() {
        let h = Hello {
            token: [7; 16],
            from: 0x0102_0304,
            to: 9,
        };
        let mut b = [0u8; HELLO_LEN];
        h.encode(MAGIC, &mut b);
        // Built by hand from the layout in the module comment.
        let mut want = Vec::new();
        want.extend_from_slice(MAGIC);
        want.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
        want.extend_from_slice(&[7; 16]);
        want.extend_from_slice(&[4, 3, 2, 1]);
        want.extend_from_slice(&[9, 0, 0, 0]);
        assert_eq!(b.as_slice(), want.as_slice());
        assert_eq!(Hello::decode(MAGIC, &b), Ok(h));
    }

    #[test]
    fn strangers_are_refused() {
        let mut b = [0u8; HELLO_LEN];
        Hello {
            token: [1; 16],
            from: 1,
            to: 2,
        }
        .encode(MAGIC, &mut b);
        assert_eq!(
            Hello::decode(b"MXOTHER\0", &b),
            Err(TransportError::BadMagic)
        );
        let mut old = b;
        old[8..10].copy_from_slice(&(PROTOCOL_VERSION + 1).to_le_bytes());
        assert_eq!(
            Hello::decode(MAGIC, &old),
            Err(TransportError::Version(PROTOCOL_VERSION + 1))
        );
        assert_eq!(
            Hello::decode(MAGIC, &b[..HELLO_LEN - 1]),
            Err(TransportError::Length {
                what: "hello",
                got: HELLO_LEN - 1,
                want: HELLO_LEN.to_string()
            })
        );
        assert_eq!(
            Hello::decode(MAGIC, &b).map_err(|e| e.to_string()),
            Ok(Hello {
                token: [1; 16],
                from: 1,
                to: 2
            })
        );
        assert!(check_preamble(MAGIC, &b[..5]).is_err());
        crate::fuzz::mutations(&b, 20_000, |m| {
            let _ = Hello::decode(MAGIC, m);
        });
    }
}
