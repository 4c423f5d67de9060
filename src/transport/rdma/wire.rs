//! Connection data: what two ranks tell each other, over their TCP control
//! socket, before they connect queue pairs. Little-endian, every length bounded
//! before anything is allocated:
//!
//! ```text
//! "MXRDMA\0\0" version:u16 kind:u8
//!   kind 0 (offer):   link_layer:u8 mtu:u8 lid:u16 gid:[16] slot_bytes:u32
//!                     slots:u16 addr:u64 rkey:u32 nqps:u16 (qpn:u32 psn:u32)*nqps
//!   kind 1 (decline): len:u16 reason:[len]        (len <= MAX_REASON)
//! ```
//!
//! An offer is a rank's port (fabric, address), its staging layout and one RC
//! queue pair per lane; a decline says why this rank will not use RDMA with that
//! peer (no device, no active port, ...). Both sides decide from the same two
//! messages, so they always agree on the transport. The magic and version are
//! `transport::hello`'s preamble; the token and ranks need not travel again, as the
//! TCP socket carrying this was admitted by its own hello.

use crate::error::TransportError;
use crate::transport::hello;

/// Longest decline reason carried.
pub(crate) const MAX_REASON: usize = 512;
/// Most queue pairs (lanes) per peer.
pub(crate) const MAX_QPS: usize = 64;
/// Upper bound of an encoded message, for the reader.
pub(crate) const MAX_MESSAGE: usize = HEADER + OFFER_FIXED + 8 * MAX_QPS;

const MAGIC: &[u8; 8] = b"MXRDMA\0\0";
const HEADER: usize = hello::PREAMBLE_LEN + 1;
const OFFER_FIXED: usize = 1 + 1 + 2 + 16 + 4 + 2 + 8 + 4 + 2;

/// One queue pair's address: number and initial packet sequence number (24 bits each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QpAddr {
    pub qpn: u32,
    pub psn: u32,
}

/// A rank's side of an RDMA connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Offer {
    /// `IBV_LINK_LAYER_INFINIBAND` (1) or `_ETHERNET` (2, RoCE).
    pub link_layer: u8,
    /// Active MTU as `enum ibv_mtu` (1 = 256 B .. 5 = 4096 B).
    pub mtu: u8,
    /// Port LID (InfiniBand).
    pub lid: u16,
    /// GID at `MIXCCL_IB_GID_INDEX` (RoCE routing; the subnet prefix names the IB fabric).
    pub gid: [u8; 16],
    /// Bytes per staging slot.
    pub slot_bytes: u32,
    /// Slots per lane and direction.
    pub slots: u16,
    /// Address of the registered staging region (receive slots of lane l at
    /// `addr + (2l+1) * slots * slot_bytes`).
    pub addr: u64,
    /// Remote key of the staging region.
    pub rkey: u32,
    /// One queue pair per lane.
    pub qps: Vec<QpAddr>,
}

impl Offer {
    /// The fabric this port is on, for "same fabric" checks: InfiniBand ports by
    /// GID subnet prefix; RoCE ports are all taken as one routed Ethernet fabric.
    pub(crate) fn fabric(&self) -> String {
        match self.link_layer {
            1 => {
                let p = &self.gid[..8];
                format!(
                    "InfiniBand subnet {:02x}{:02x}:{:02x}{:02x}:{:02x}{:02x}:{:02x}{:02x}",
                    p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7]
                )
            }
            2 => "Ethernet (RoCE)".into(),
            l => format!("link layer {l}"),
        }
    }
}

/// What a rank sends a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Message {
    /// "Here is my queue pair data."
    Offer(Offer),
    /// "Not with me, because ..."
    Decline(String),
}

impl Message {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(64);
        b.extend_from_slice(&hello::preamble(MAGIC));
        match self {
            Message::Offer(o) => {
                b.push(0);
                b.push(o.link_layer);
                b.push(o.mtu);
                b.extend_from_slice(&o.lid.to_le_bytes());
                b.extend_from_slice(&o.gid);
                b.extend_from_slice(&o.slot_bytes.to_le_bytes());
                b.extend_from_slice(&o.slots.to_le_bytes());
                b.extend_from_slice(&o.addr.to_le_bytes());
                b.extend_from_slice(&o.rkey.to_le_bytes());
                let qps = &o.qps[..o.qps.len().min(MAX_QPS)];
                b.extend_from_slice(&(qps.len() as u16).to_le_bytes());
                for q in qps {
                    b.extend_from_slice(&q.qpn.to_le_bytes());
                    b.extend_from_slice(&q.psn.to_le_bytes());
                }
            }
            Message::Decline(why) => {
                b.push(1);
                let mut end = why.len().min(MAX_REASON);
                while !why.is_char_boundary(end) {
                    end -= 1;
                }
                b.extend_from_slice(&(end as u16).to_le_bytes());
                b.extend_from_slice(&why.as_bytes()[..end]);
            }
        }
        b
    }

    /// Decodes one whole message. Never panics; allocates only after the count it
    /// sizes by is bounded and matches the bytes present.
    pub(crate) fn decode(b: &[u8]) -> Result<Message, TransportError> {
        let mut r = Reader { b, at: 0 };
        hello::check_preamble(MAGIC, r.take(hello::PREAMBLE_LEN)?)?;
        let msg = match r.u8()? {
            0 => {
                let link_layer = r.u8()?;
                let mtu = r.u8()?;
                let lid = r.u16()?;
                let gid: [u8; 16] = r.take(16)?.try_into().expect("take gave 16 bytes");
                let slot_bytes = r.u32()?;
                let slots = r.u16()?;
                let addr = r.u64()?;
                let rkey = r.u32()?;
                let n = r.u16()? as usize;
                if !(1..=MAX_QPS).contains(&n) {
                    return Err(TransportError::Field(format!(
                        "{n} queue pairs (expected 1..={MAX_QPS})"
                    )));
                }
                if r.left() != 8 * n {
                    return Err(TransportError::Length {
                        what: "queue pair addresses",
                        got: r.left(),
                        want: format!("{} for {n} queue pairs", 8 * n),
                    });
                }
                let mut qps = Vec::with_capacity(n);
                for _ in 0..n {
                    qps.push(QpAddr {
                        qpn: r.u32()?,
                        psn: r.u32()?,
                    });
                }
                if !(1..=5).contains(&mtu) {
                    return Err(TransportError::Field(format!("MTU code {mtu}")));
                }
                if slot_bytes == 0 || slot_bytes > 1 << 30 || slots == 0 {
                    return Err(TransportError::Field(format!(
                        "staging of {slots} slots of {slot_bytes} bytes"
                    )));
                }
                Message::Offer(Offer {
                    link_layer,
                    mtu,
                    lid,
                    gid,
                    slot_bytes,
                    slots,
                    addr,
                    rkey,
                    qps,
                })
            }
            1 => {
                let n = r.u16()? as usize;
                if n > MAX_REASON || r.left() != n {
                    return Err(TransportError::Field(format!(
                        "decline reason of {n} bytes"
                    )));
                }
                Message::Decline(String::from_utf8_lossy(r.take(n)?).into_owned())
            }
            k => return Err(TransportError::UnknownKind(k)),
        };
        if r.left() != 0 {
            return Err(TransportError::Length {
                what: "message",
                got: b.len(),
                want: format!("{} without trailing bytes", r.at),
            });
        }
        Ok(msg)
    }
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn left(&self) -> usize {
        self.b.len() - self.at
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], TransportError> {
        let s = self
            .b
            .get(self.at..self.at.saturating_add(n))
            .ok_or(TransportError::Truncated { at: self.at })?;
        self.at += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, TransportError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, TransportError> {
        let s = self.take(2)?;
        Ok(u16::from_le_bytes([s[0], s[1]]))
    }
    fn u32(&mut self) -> Result<u32, TransportError> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(a))
    }
    fn u64(&mut self) -> Result<u64, TransportError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
}

#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    /// A plausible InfiniBand offer with `nqps` queue pairs.
    pub(crate) fn offer(nqps: usize) -> Offer {
        Offer {
            link_layer: 1,
            mtu: 5,
            lid: 7,
            gid: [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8],
            slot_bytes: 128 << 10,
            slots: 8,
            addr: 0x7f00_1234_5000,
            rkey: 0xabcd,
            qps: (0..nqps as u32)
                .map(|i| QpAddr {
                    qpn: 100 + i,
                    psn: 0x12345 + i,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::offer;
    use super::*;

    #[test]
    fn messages_round_trip() {
        for m in [
            Message::Offer(offer(1)),
            Message::Offer(offer(MAX_QPS)),
            Message::Decline("no RDMA device".into()),
            Message::Decline(String::new()),
        ] {
            let b = m.encode();
            assert!(b.len() <= MAX_MESSAGE);
            assert_eq!(Message::decode(&b).unwrap(), m);
        }
        // A long reason is cut at a character boundary and still decodes.
        let long = "é".repeat(MAX_REASON);
        match Message::decode(&Message::Decline(long).encode()).unwrap() {
            Message::Decline(r) => assert!(r.len() <= MAX_REASON && r.starts_with('é')),
            m => panic!("{m:?}"),
        }
    }

    #[test]
    fn corrupt_messages_are_refused() {
        let good = Message::Offer(offer(2)).encode();
        for cut in 0..good.len() {
            assert!(Message::decode(&good[..cut]).is_err(), "cut at {cut}");
        }
        assert_eq!(
            Message::decode(&good[..HEADER]),
            Err(TransportError::Truncated { at: HEADER })
        );
        let mut extra = good.clone();
        extra.push(0);
        assert!(matches!(
            Message::decode(&extra),
            Err(TransportError::Length { .. })
        ));
        let mut many = good.clone();
        let at = HEADER + OFFER_FIXED - 2;
        many[at..at + 2].copy_from_slice(&u16::MAX.to_le_bytes());
        let e = Message::decode(&many).unwrap_err();
        assert!(
            matches!(&e, TransportError::Field(f) if f.contains("queue pairs")),
            "{e:?}"
        );
        let mut zero = good.clone();
        zero[at..at + 2].copy_from_slice(&0u16.to_le_bytes());
        assert!(Message::decode(&zero).is_err());
        let mut kind = good;
        kind[HEADER - 1] = 9;
        assert_eq!(Message::decode(&kind), Err(TransportError::UnknownKind(9)));
    }

    /// Fuzzing without a dependency: a fixed-seed xorshift feeds the decoder random
    /// bytes and random mutations of valid messages. It must never panic, and
    /// whatever it accepts must re-encode to the same bytes (so nothing is read
    /// beyond what was checked).
    #[test]
    fn decoder_survives_random_input() {
        let mut s: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let seeds = [
            Message::Offer(offer(1)).encode(),
            Message::Offer(offer(3)).encode(),
            Message::Decline("port down".into()).encode(),
        ];
        let mut accepted = 0;
        for i in 0..200_000 {
            let mut b = if i % 4 == 0 {
                let n = (next() % 96) as usize;
                let mut b: Vec<u8> = (0..n).map(|_| next() as u8).collect();
                if n >= 10 && next() % 2 == 0 {
                    b[..hello::PREAMBLE_LEN].copy_from_slice(&hello::preamble(MAGIC));
                }
                b
            } else {
                seeds[(next() % 3) as usize].clone()
            };
            for _ in 0..(next() % 4) {
                if b.is_empty() {
                    break;
                }
                let at = (next() as usize) % b.len();
                match next() % 3 {
                    0 => b[at] = next() as u8,
                    1 => b.truncate(at),
                    _ => b.insert(at, next() as u8),
                }
            }
            if let Ok(m) = Message::decode(&b) {
                accepted += 1;
                if let Message::Offer(_) = m {
                    assert_eq!(m.encode(), b);
                }
            }
        }
        assert!(
            accepted > 1000,
            "the mutations should keep some messages valid"
        );
    }

    #[test]
    fn fabric_names_the_subnet() {
        let mut o = offer(1);
        assert_eq!(o.fabric(), "InfiniBand subnet fe80:0000:0000:0000");
        o.link_layer = 2;
        assert_eq!(o.fabric(), "Ethernet (RoCE)");
    }
}
