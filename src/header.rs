//! What ranks tell each other about a call, outside its data.
//!
//! - [`CallHeader`]: 48 bytes every rank sends each peer it exchanges data with, as
//!   the first message of every call on that link: sequence number, collective, data
//!   type, op, count, root, a hash of the algorithm, and how many bytes this call
//!   will send to that peer. The receiver compares it with its own call before
//!   trusting any data, so mismatched calls are `Error::Mismatch`, not a hang or
//!   wrong data.
//! - Control messages ([`encode_control`], [`decode_control`]): an error report a
//!   rank sends every peer on the links' control channels (outside the data
//!   streams) when it finds a mismatch, so ranks that did not exchange data with
//!   the culprit stop too, with the same error.
//!
//! Decoders bound every length and never panic on arbitrary bytes.

use crate::config::Collective;
use crate::element::DataType;
use crate::error::Error;
use crate::reduce::ReduceOp;

/// Bytes of a [`CallHeader`] on the wire.
pub(crate) const HEADER_BYTES: usize = 48;
const MAGIC: [u8; 4] = *b"MXH1";
const CONTROL_MAGIC: [u8; 4] = *b"MXC1";
/// Longest control message accepted (bytes after the length prefix).
pub(crate) const MAX_CONTROL: usize = 4096;
/// Longest text field in a control message.
const MAX_TEXT: usize = 1024;

/// One rank's description of a call, as sent to one peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CallHeader {
    pub seq: u64,
    pub coll: Collective,
    pub dtype: DataType,
    pub op: ReduceOp,
    pub count: u64,
    pub root: u32,
    /// FNV-1a of the algorithm's name: ranks must run the same plan.
    pub algo: u32,
    /// Bytes this call sends to the receiving peer (data only).
    pub bytes_to_you: u64,
    /// Bytes this call expects from the receiving peer, so a rank that only sends
    /// learns that its peer expects something else.
    pub bytes_from_you: u64,
}

/// Top bit of a header's `count`: the call is an uneven ("v") collective and the rest
/// of `count` is a digest of its per-rank counts ([`counts_digest`]). No even call
/// has 2^63 elements, so the wire layout stays as it was.
pub(crate) const UNEVEN: u64 = 1 << 63;

/// FNV-1a (64 bits) of per-rank counts, with [`UNEVEN`] set: the `count` an uneven
/// call's header carries, equal on ranks that agree about every count.
pub(crate) fn counts_digest(counts: &[usize]) -> u64 {
    let h = counts
        .iter()
        .flat_map(|c| (*c as u64).to_le_bytes())
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    h | UNEVEN
}

/// FNV-1a, 32 bits.
pub(crate) fn fnv32(s: &str) -> u32 {
    s.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

impl CallHeader {
    /// The wire form.
    pub(crate) fn encode(&self) -> [u8; HEADER_BYTES] {
        let mut b = [0u8; HEADER_BYTES];
        b[0..4].copy_from_slice(&MAGIC);
        b[4..12].copy_from_slice(&self.seq.to_le_bytes());
        b[12] = coll_code(self.coll);
        b[13] = self.dtype as u8;
        b[14] = self.op as u8;
        b[16..24].copy_from_slice(&self.count.to_le_bytes());
        b[24..28].copy_from_slice(&self.root.to_le_bytes());
        b[28..32].copy_from_slice(&self.algo.to_le_bytes());
        b[32..40].copy_from_slice(&self.bytes_to_you.to_le_bytes());
        b[40..48].copy_from_slice(&self.bytes_from_you.to_le_bytes());
        b
    }

    /// Parses a header; `None` if the bytes are not one.
    pub(crate) fn decode(b: &[u8]) -> Option<CallHeader> {
        if b.len() < HEADER_BYTES || b[0..4] != MAGIC {
            return None;
        }
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        Some(CallHeader {
            seq: u64_at(4),
            coll: *Collective::ALL.get(usize::from(b[12]))?,
            dtype: DataType::from_nccl(i32::from(b[13]))?,
            op: *ReduceOp::ALL.get(usize::from(b[14]))?,
            count: u64_at(16),
            root: u32_at(24),
            algo: u32_at(28),
            bytes_to_you: u64_at(32),
            bytes_from_you: u64_at(40),
        })
    }

    /// The call as a person would name it, e.g. `allreduce #12 (1024 x float, sum)`.
    pub(crate) fn describe(&self, algo_name: Option<&str>) -> String {
        let mut s = format!("{} #{}", self.coll, self.seq);
        match self.coll {
            Collective::SendRecv => {}
            Collective::Barrier => return s,
            _ if self.count & UNEVEN != 0 => s.push_str(&format!(
                " (uneven, counts digest {:#x}, {}",
                self.count & !UNEVEN,
                self.dtype
            )),
            _ => s.push_str(&format!(" ({} x {}", self.count, self.dtype)),
        }
        if reduces(self.coll) {
            s.push_str(&format!(", {}", self.op));
        }
        if rooted(self.coll) {
            s.push_str(&format!(", root {}", self.root));
        }
        if self.coll != Collective::SendRecv {
            s.push(')');
        }
        if let Some(a) = algo_name {
            s.push_str(&format!(" via {a}"));
        }
        s
    }

    /// Why `theirs` (from the peer) cannot be the same call as `self` (the header
    /// this rank sent that peer); `None` if it can.
    pub(crate) fn conflict(&self, theirs: &CallHeader) -> Option<&'static str> {
        if theirs.seq != self.seq {
            return Some("sequence number");
        }
        if theirs.coll != self.coll {
            return Some("collective");
        }
        let data = !matches!(self.coll, Collective::SendRecv | Collective::Barrier);
        if data && theirs.dtype != self.dtype {
            return Some("data type");
        }
        if data && theirs.count != self.count {
            if (theirs.count | self.count) & UNEVEN != 0 {
                return Some("per-rank counts");
            }
            return Some("count");
        }
        if reduces(self.coll) && theirs.op != self.op {
            return Some("reduction op");
        }
        if rooted(self.coll) && theirs.root != self.root {
            return Some("root");
        }
        if theirs.algo != self.algo {
            return Some("algorithm");
        }
        if theirs.bytes_to_you != self.bytes_from_you || theirs.bytes_from_you != self.bytes_to_you
        {
            return Some("bytes to transfer");
        }
        None
    }
}

fn coll_code(c: Collective) -> u8 {
    Collective::ALL
        .iter()
        .position(|x| *x == c)
        .unwrap_or(usize::from(u8::MAX)) as u8
}

fn reduces(c: Collective) -> bool {
    matches!(
        c,
        Collective::AllReduce | Collective::Reduce | Collective::ReduceScatter
    )
}

fn rooted(c: Collective) -> bool {
    matches!(c, Collective::Broadcast | Collective::Reduce)
}

/// A control message: an error every rank should report. Mismatches travel, and so
/// does a lost peer, so ranks that then lose the reporting rank in turn (it exits)
/// still name the rank that died first; a revoke travels so every member stops.
pub(crate) fn encode_control(e: &Error) -> Option<Vec<u8>> {
    let text = |s: &str| {
        let mut end = s.len().min(MAX_TEXT);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        let t = &s.as_bytes()[..end];
        let mut v = (t.len() as u16).to_le_bytes().to_vec();
        v.extend_from_slice(t);
        v
    };
    let mut m = CONTROL_MAGIC.to_vec();
    match e {
        Error::Mismatch {
            rank,
            theirs,
            peer,
            ours,
        } => {
            m.push(1);
            m.extend_from_slice(&(*rank as u32).to_le_bytes());
            m.extend_from_slice(&(*peer as u32).to_le_bytes());
            m.extend(text(theirs));
            m.extend(text(ours));
        }
        Error::PeerLost { rank, reason } => {
            m.push(2);
            m.extend_from_slice(&(*rank as u32).to_le_bytes());
            m.extend_from_slice(&0u32.to_le_bytes());
            m.extend(text(reason));
            m.extend(text(""));
        }
        Error::Revoked { rank } => {
            m.push(3);
            m.extend_from_slice(&(*rank as u32).to_le_bytes());
            m.extend_from_slice(&0u32.to_le_bytes());
            m.extend(text(""));
            m.extend(text(""));
        }
        _ => return None,
    }
    Some(m)
}

/// Parses a control message from peer `from`; anything malformed is reported as
/// such (the peer is then in an unknown state), never a panic.
pub(crate) fn decode_control(from: usize, m: &[u8]) -> Error {
    let bad = || Error::PeerLost {
        rank: from,
        reason: format!("sent a malformed control message ({} bytes)", m.len()),
    };
    if m.len() > MAX_CONTROL || m.len() < 13 || m[0..4] != CONTROL_MAGIC {
        return bad();
    }
    let rank = u32::from_le_bytes(m[5..9].try_into().expect("4 bytes")) as usize;
    let peer = u32::from_le_bytes(m[9..13].try_into().expect("4 bytes")) as usize;
    let mut at = 13;
    let mut text = || -> Option<String> {
        let len = usize::from(u16::from_le_bytes(m.get(at..at + 2)?.try_into().ok()?));
        if len > MAX_TEXT {
            return None;
        }
        let s = String::from_utf8_lossy(m.get(at + 2..at + 2 + len)?).into_owned();
        at += 2 + len;
        Some(s)
    };
    match (m[4], text(), text()) {
        (1, Some(theirs), Some(ours)) => Error::Mismatch {
            rank,
            theirs,
            peer,
            ours,
        },
        (2, Some(reason), Some(_)) => Error::PeerLost {
            rank,
            reason: format!("{reason} (reported by rank {from})"),
        },
        (3, Some(_), Some(_)) => Error::Revoked { rank },
        _ => bad(),
    }
}

/// The control message a link sends when it closes normally, so its peer can tell
/// a finished rank from a dead one.
pub(crate) const GOODBYE: &[u8] = b"MXBYE";

/// The receiving end of a control channel on a stream socket (TCP, Unix): whole
/// messages in order, whether the peer said goodbye, whether the stream ended.
#[derive(Debug, Default)]
pub(crate) struct ControlReader {
    frames: ControlFrames,
    pending: std::collections::VecDeque<Vec<u8>>,
    eof: bool,
    bye: bool,
}

impl ControlReader {
    /// Reads what has arrived on `fd` without blocking: messages (kept in order,
    /// the goodbye noted) or the end of the stream.
    pub(crate) fn pump(&mut self, fd: std::os::fd::RawFd) -> std::io::Result<()> {
        self.pump_with(|b| crate::sys::recv_nowait(fd, b))
    }

    /// [`ControlReader::pump`] from `read`, which fills a buffer as `recv_nowait`
    /// does (`None`: nothing now, `Some(0)`: the end); TLS links decrypt through it.
    pub(crate) fn pump_with(
        &mut self,
        mut read: impl FnMut(&mut [u8]) -> std::io::Result<Option<usize>>,
    ) -> std::io::Result<()> {
        let mut b = [0u8; 512];
        while !self.eof {
            match read(&mut b)? {
                Some(0) => self.eof = true,
                Some(n) => self.frames.feed(&b[..n]),
                None => break,
            }
        }
        while let Some(m) = self.frames.next() {
            if m == GOODBYE {
                self.bye = true;
            } else {
                self.pending.push_back(m);
            }
        }
        Ok(())
    }

    /// The next message read so far (never the goodbye).
    pub(crate) fn next(&mut self) -> Option<Vec<u8>> {
        self.pending.pop_front()
    }

    /// Has the stream ended?
    pub(crate) fn ended(&self) -> bool {
        self.eof
    }

    /// Did the stream end without a goodbye (the peer's process died)?
    pub(crate) fn died(&self) -> bool {
        self.eof && !self.bye
    }
}

/// Length-prefixed framing of control messages on a byte stream (TCP, Unix socket).
#[derive(Debug, Default)]
pub(crate) struct ControlFrames {
    buf: Vec<u8>,
}

impl ControlFrames {
    /// `msg` with its 2-byte length prefix.
    pub(crate) fn frame(msg: &[u8]) -> Vec<u8> {
        let len = msg.len().min(MAX_CONTROL);
        let mut v = (len as u16).to_le_bytes().to_vec();
        v.extend_from_slice(&msg[..len]);
        v
    }

    /// Adds received bytes.
    pub(crate) fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole message, if one has arrived. A length over [`MAX_CONTROL`]
    /// yields the oversized prefix as a message, which then fails to decode.
    pub(crate) fn next(&mut self) -> Option<Vec<u8>> {
        if self.buf.len() < 2 {
            return None;
        }
        let len = usize::from(u16::from_le_bytes([self.buf[0], self.buf[1]]));
        if len > MAX_CONTROL {
            let junk = self.buf.split_off(0);
            return Some(junk);
        }
        if self.buf.len() < 2 + len {
            return None;
        }
        let msg = self.buf[2..2 + len].to_vec();
        self.buf.drain(..2 + len);
        Some(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> CallHeader {
        CallHeader {
            seq: 12,
            coll: Collective::AllReduce,
            dtype: DataType::F32,
            op: ReduceOp::Sum,
            count: 1024,
            root: 0,
            algo: fnv32("ring"),
            bytes_to_you: 4096,
            bytes_from_you: 4096,
        }
    }

    #[test]
    fn headers_round_trip_and_conflicts_are_named() {
        let h = header();
        assert_eq!(CallHeader::decode(&h.encode()), Some(h));
        assert_eq!(h.conflict(&h), None);
        let with = |f: &dyn Fn(&mut CallHeader)| {
            let mut t = h;
            f(&mut t);
            h.conflict(&t)
        };
        assert_eq!(with(&|t| t.seq = 13), Some("sequence number"));
        assert_eq!(
            with(&|t| t.coll = Collective::AllGather),
            Some("collective")
        );
        assert_eq!(with(&|t| t.dtype = DataType::F64), Some("data type"));
        assert_eq!(with(&|t| t.count = 1023), Some("count"));
        assert_eq!(with(&|t| t.op = ReduceOp::Max), Some("reduction op"));
        assert_eq!(with(&|t| t.root = 3), None, "all_reduce has no root");
        assert_eq!(with(&|t| t.algo = 7), Some("algorithm"));
        assert_eq!(with(&|t| t.bytes_to_you = 1), Some("bytes to transfer"));
        assert_eq!(with(&|t| t.bytes_from_you = 1), Some("bytes to transfer"));
        assert_eq!(
            h.describe(Some("ring")),
            "allreduce #12 (1024 x float, sum) via ring"
        );
    }

    #[test]
    fn control_messages_round_trip() {
        let e = Error::Mismatch {
            rank: 2,
            theirs: "all_gather #5".into(),
            peer: 3,
            ours: "all_reduce #5 (é)".into(),
        };
        let m = encode_control(&e).unwrap();
        let mut f = ControlFrames::default();
        let framed = ControlFrames::frame(&m);
        f.feed(&framed[..3]);
        assert_eq!(f.next(), None);
        f.feed(&framed[3..]);
        let got = decode_control(3, &f.next().unwrap());
        assert_eq!(got.to_string(), e.to_string());
        assert!(encode_control(&Error::Aborted).is_none());
        let lost = Error::PeerLost {
            rank: 3,
            reason: "connection closed (EOF)".into(),
        };
        let got = decode_control(2, &encode_control(&lost).unwrap());
        assert!(
            matches!(&got, Error::PeerLost { rank: 3, reason } if reason.contains("reported by rank 2")),
            "{got:?}"
        );
        let got = decode_control(1, &encode_control(&Error::Revoked { rank: 4 }).unwrap());
        assert!(matches!(got, Error::Revoked { rank: 4 }), "{got:?}");
    }

    /// Mutated headers and control messages never panic the decoders.
    #[test]
    fn decoders_survive_mutated_input() {
        crate::fuzz::mutations(&header().encode(), 30_000, |b| {
            let _ = CallHeader::decode(b);
        });
        let e = Error::Mismatch {
            rank: 1,
            theirs: "a".into(),
            peer: 2,
            ours: "b".into(),
        };
        let msg = encode_control(&e).unwrap();
        crate::fuzz::mutations(&msg, 30_000, |b| {
            let _ = decode_control(1, b);
        });
        crate::fuzz::mutations(&ControlFrames::frame(&msg), 30_000, |b| {
            let mut f = ControlFrames::default();
            f.feed(b);
            while f.next().is_some() {}
        });
    }
}
