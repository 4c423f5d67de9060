//! Control: what a call checks and says outside its data. Writing this rank's call
//! headers, checking each received one against the one sent ([`check_header`]),
//! reading peers' error reports and deaths off the links' control channels
//! ([`control_error`], [`control_report`]), and, when a call fails with a mismatch
//! or a lost peer, waiting briefly for the report that names the first cause and
//! passing it on to every peer ([`settle`]).

use super::lower::{Lowered, HEADER_SLOT};
use super::{Buffers, Context};
use crate::error::{Error, Result};
use crate::header::{decode_control, encode_control, CallHeader, HEADER_BYTES};
use crate::transport::Link;
use std::time::{Duration, Instant};

/// How long a rank that lost a peer waits for that peer's mismatch report.
const CONTROL_GRACE: Duration = Duration::from_millis(100);

/// Writes the header this rank sends each header peer of `low` into its slot:
/// `mine` with the bytes to and from that peer and, for point-to-point calls, the
/// per-peer sequence number (advanced here).
pub(crate) fn write_headers(
    low: &Lowered,
    mine: CallHeader,
    bufs: &mut Buffers<'_, '_>,
    nranks: usize,
    cx: &Context<'_>,
) {
    let mut p2p = cx.p2p_seq.map(|c| c.borrow_mut());
    if let Some(seq) = p2p.as_deref_mut() {
        seq.resize(nranks, 0);
    }
    for hp in &low.peers {
        let seq = match p2p.as_deref_mut() {
            Some(seq) => {
                seq[hp.peer] += 1;
                seq[hp.peer] - 1
            }
            None => mine.seq,
        };
        let at = hp.peer * HEADER_SLOT;
        let h = CallHeader {
            bytes_to_you: hp.to,
            bytes_from_you: hp.from,
            seq,
            ..mine
        };
        bufs.header[at..at + HEADER_BYTES].copy_from_slice(&h.encode());
    }
}

/// Checks the header received from `peer` against the one this rank sent it.
/// Formats nothing unless they differ: this runs for every peer of every call.
pub(crate) fn check_header(bufs: &Buffers<'_, '_>, peer: usize, cx: &Context<'_>) -> Result<()> {
    let at = peer * HEADER_SLOT;
    let Some(mine) = CallHeader::decode(&bufs.header[at..at + HEADER_BYTES]) else {
        return Err(Error::Internal("own call header does not decode".into()));
    };
    let ours = || {
        format!(
            "{} sending {} bytes, expecting {}",
            mine.describe(Some(cx.algo)),
            mine.bytes_to_you,
            mine.bytes_from_you
        )
    };
    let Some(theirs) = CallHeader::decode(&bufs.header[at + HEADER_BYTES..at + 2 * HEADER_BYTES])
    else {
        return Err(Error::Mismatch {
            rank: cx.rank,
            theirs: ours(),
            peer,
            ours: "something that is not a mixccl call (unrecognised header bytes)".into(),
        });
    };
    match mine.conflict(&theirs) {
        None => Ok(()),
        Some(what) => Err(Error::Mismatch {
            rank: cx.rank,
            theirs: ours(),
            peer,
            ours: format!(
                "{} sending {} bytes, expecting {} (differs in {what})",
                theirs.describe(None),
                theirs.bytes_to_you,
                theirs.bytes_from_you
            ),
        }),
    }
}

/// An error a peer among `peers` reported on its control channel, else such a peer's
/// death (its control channel closed without a goodbye), if either came.
pub(crate) fn control_error(
    links: &mut [Option<Box<dyn Link>>],
    peers: impl Fn(usize) -> bool,
) -> Result<()> {
    let mut dead = None;
    for (p, l) in links.iter_mut().enumerate().filter(|(p, _)| peers(*p)) {
        if let Some(l) = l {
            match l.recv_control() {
                Ok(Some(msg)) => return Err(decode_control(p, &msg)),
                Ok(None) => {}
                Err(e) => {
                    dead.get_or_insert(e);
                }
            }
        }
    }
    dead.map_or(Ok(()), Err)
}

/// Only what peers reported on their control channels (not deaths seen here).
pub(crate) fn control_report(links: &mut [Option<Box<dyn Link>>]) -> Option<Error> {
    for (p, l) in links.iter_mut().enumerate() {
        if let Some(l) = l {
            if let Ok(Some(msg)) = l.recv_control() {
                return Some(decode_control(p, &msg));
            }
        }
    }
    None
}

/// The final result of a call run behind headers. A lost peer may be the echo of
/// a failure elsewhere: a peer that failed reports why, then may close its links,
/// and its report (on another channel) can trail the close, so wait up to
/// `CONTROL_GRACE` for a report naming the first cause (a mismatch, or the rank
/// that died first) and prefer it. A mismatch or lost peer is then sent to every
/// peer, so everyone stops with the same report, also ranks that never talk to the
/// culprit.
pub(crate) fn settle(
    mut result: Result<()>,
    links: &mut [Option<Box<dyn Link>>],
    cx: &Context<'_>,
) -> Result<()> {
    if let Err(Error::PeerLost { .. }) = &result {
        let until = Instant::now() + CONTROL_GRACE;
        loop {
            match control_report(links) {
                Some(e @ Error::Mismatch { .. }) => {
                    result = Err(e);
                    break;
                }
                Some(e @ Error::PeerLost { .. }) if !matches!(e, Error::PeerLost { rank, .. } if rank == cx.rank) =>
                {
                    result = Err(e);
                    break;
                }
                _ => {}
            }
            if Instant::now() >= until {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    if let Err(e @ (Error::Mismatch { .. } | Error::PeerLost { .. })) = &result {
        if let Some(msg) = encode_control(e) {
            for l in links.iter_mut().flatten() {
                let _ = l.send_control(&msg);
            }
        }
    }
    result
}
