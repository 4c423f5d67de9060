//! Several roots (`Communicator::init_scalable`, NCCL 2.23's
//! `ncclCommInitRankScalable`): which root each rank joins, what every rank's
//! hello says about the list of ids so that disagreeing ranks are refused, and the
//! messages the roots exchange. Root `i` gathers the hellos of its contiguous slice
//! of ranks; every root but 0 then sends its slice to root 0 (`MXSLICE`), root 0
//! sends the whole table back (`MXFULL`, framing the very bytes a rank reads:
//! the table or the failure report), and each root hands it to its own ranks
//! (the table down a tree of its slice's ranks, `tree`). A root holds sockets
//! for its slice only (about n / nroots), none once it is done.
//!
//! Wire (little-endian): a rank's hello to root `i` of several is the plain hello
//! with magic `"MXHELST\0"` and, between the header and the tree port,
//! `nroots:u32 index:u32 digest:u64 first:[128]` (`digest` hashes every id in
//! order; `first` is `ids[0]`, whose root gathers the slices). A slice:
//! `"MXSLICE\0" version:u16 token:[16] digest:u64 nranks:u32 nroots:u32
//! index:u32 count:u32 (len:u32 info:[len])*count`, `token` being `ids[0]`'s.
//! Owns no sockets; the serve loop is `root.rs`, the rank's side `mod.rs`.

use crate::bootstrap::unique_id::fnv1a;
use crate::bootstrap::MAX_INFO;
use crate::wire::{MAX_RANKS, PROTOCOL_VERSION};
use crate::UniqueId;
use std::ops::Range;

/// Opens a rank's hello to one of several roots, as builds before the bootstrap
/// tree sent it (refused by name).
pub(crate) const SCALE_HELLO_MAGIC: &[u8; 8] = b"MXHELLS\0";
/// Opens a rank's hello to one of several roots with its tree port (`tree`).
pub(crate) const SCALE_TREE_HELLO_MAGIC: &[u8; 8] = b"MXHELST\0";
/// Opens a root's slice of the table, sent to root 0.
pub(crate) const SLICE_MAGIC: &[u8; 8] = b"MXSLICE\0";
/// Opens root 0's answer to a root: `len:u32` and the message for its ranks.
pub(crate) const FULL_MAGIC: &[u8; 8] = b"MXFULL\0\0";
/// Bytes the scalable hello adds after the plain header.
pub(crate) const SCALE_EXT: usize = 4 + 4 + 8 + UniqueId::BYTES;
/// Header of a slice, before its entries.
pub(crate) const SLICE_HEADER: usize = 8 + 2 + 16 + 8 + 4 * 4;

/// The first rank of root `root`'s slice when `nranks` ranks share `nroots` roots:
/// contiguous slices, the first `nranks % nroots` roots one rank larger. This is
/// NCCL's rule (`firstRankFromRoot` in NVIDIA/nccl `src/bootstrap.cc`, 2.23, with
/// no offset), so a rank meets the root NCCL would send it to.
pub(crate) fn first_rank(root: usize, nranks: usize, nroots: usize) -> usize {
    root * (nranks / nroots) + root.min(nranks % nroots)
}

/// The root rank `rank` joins (`rootIdFromRank` in NVIDIA/nccl `src/bootstrap.cc`).
pub(crate) fn root_of(rank: usize, nranks: usize, nroots: usize) -> usize {
    let (rmr, rpr) = (nranks % nroots, nranks / nroots);
    let big = rmr * (rpr + 1);
    if rank < big {
        rank / (rpr + 1)
    } else {
        (rank - big) / rpr + rmr
    }
}

/// The ranks root `root` gathers.
pub(crate) fn slice(root: usize, nranks: usize, nroots: usize) -> Range<usize> {
    first_rank(root, nranks, nroots)..first_rank(root + 1, nranks, nroots)
}

/// Hashes every id in order: ranks that list other ids, or the same in another
/// order, send another digest and are refused.
pub(crate) fn digest(ids: &[UniqueId]) -> u64 {
    let all: Vec<u8> = ids.iter().flat_map(|id| *id.as_bytes()).collect();
    fnv1a(&all)
}

/// What a hello says about the roots (a plain hello: one root, digest 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Scale {
    pub nroots: usize,
    /// The root this rank chose, by `root_of`.
    pub index: usize,
    pub digest: u64,
    /// `ids[0]`: where root `index` sends its slice.
    pub first: Option<UniqueId>,
}

impl Scale {
    pub(crate) const SINGLE: Scale = Scale {
        nroots: 1,
        index: 0,
        digest: 0,
        first: None,
    };

    pub(crate) fn encode(&self, b: &mut Vec<u8>) {
        b.extend_from_slice(&(self.nroots as u32).to_le_bytes());
        b.extend_from_slice(&(self.index as u32).to_le_bytes());
        b.extend_from_slice(&self.digest.to_le_bytes());
        match &self.first {
            Some(id) => b.extend_from_slice(id.as_bytes()),
            None => b.extend_from_slice(&[0; UniqueId::BYTES]),
        }
    }

    /// Decodes the `SCALE_EXT` bytes after a scalable hello's header.
    pub(crate) fn decode(b: &[u8]) -> Result<Scale, String> {
        let u32at = |i: usize| super::u32_at(b, i) as usize;
        let (nroots, index) = (u32at(0), u32at(4));
        if !(2..=MAX_RANKS).contains(&nroots) || index >= nroots {
            return Err(format!("root {index} of {nroots} out of range"));
        }
        let digest = u64::from_le_bytes(b[8..16].try_into().expect("8"));
        let first = UniqueId::from_bytes(&b[16..16 + UniqueId::BYTES])
            .map_err(|e| format!("the first id in the hello: {e}"))?;
        Ok(Scale {
            nroots,
            index,
            digest,
            first: Some(first),
        })
    }
}

/// A root's slice, as root 0 receives it.
#[derive(Debug)]
pub(crate) struct Slice {
    pub digest: u64,
    pub nranks: usize,
    pub nroots: usize,
    pub index: usize,
    pub infos: Vec<Vec<u8>>,
}

/// The slice message root `index` sends root 0 (whose token is `token`).
pub(crate) fn encode_slice(token: &[u8; 16], s: &Slice) -> Vec<u8> {
    let mut b =
        Vec::with_capacity(SLICE_HEADER + s.infos.iter().map(|i| 4 + i.len()).sum::<usize>());
    b.extend_from_slice(SLICE_MAGIC);
    b.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    b.extend_from_slice(token);
    b.extend_from_slice(&s.digest.to_le_bytes());
    for v in [s.nranks, s.nroots, s.index, s.infos.len()] {
        b.extend_from_slice(&(v as u32).to_le_bytes());
    }
    for info in &s.infos {
        b.extend_from_slice(&(info.len() as u32).to_le_bytes());
        b.extend_from_slice(info);
    }
    b
}

/// Parses a slice from `buf` (it starts with `SLICE_MAGIC`): `Err(more)`
/// when `more` further bytes are needed at least, `Ok(Err(why))` when it is bad.
pub(crate) fn parse_slice(
    buf: &[u8],
    token: &[u8; 16],
) -> Result<std::result::Result<Slice, String>, usize> {
    if buf.len() < SLICE_HEADER {
        return Err(SLICE_HEADER - buf.len());
    }
    let bad = |why: String| Ok(Err(why));
    if let Err(why) = super::version_and_token(buf, token) {
        return bad(format!(
            "a root's slice: {why} (the token is the first id's)"
        ));
    }
    let digest = u64::from_le_bytes(buf[26..34].try_into().expect("8"));
    let u32at = |i: usize| super::u32_at(buf, i) as usize;
    let (nranks, nroots, index, count) = (u32at(34), u32at(38), u32at(42), u32at(46));
    if nranks == 0 || nranks > MAX_RANKS || nroots < 2 || nroots > nranks || index >= nroots {
        return bad(format!(
            "a slice from root {index} of {nroots} for {nranks} ranks is out of range"
        ));
    }
    if index == 0 || count != slice(index, nranks, nroots).len() {
        return bad(format!(
            "root {index} of {nroots} sent {count} ranks, expected {}",
            slice(index, nranks, nroots).len()
        ));
    }
    let mut at = SLICE_HEADER;
    let mut infos = Vec::with_capacity(count);
    for _ in 0..count {
        let Some(len) = buf.get(at..at + 4) else {
            return Err(at + 4 - buf.len());
        };
        let len = u32::from_le_bytes(len.try_into().expect("4")) as usize;
        if len > MAX_INFO {
            return bad(format!("root {index} sent {len} bytes of rank info"));
        }
        let Some(info) = buf.get(at + 4..at + 4 + len) else {
            return Err(at + 4 + len - buf.len());
        };
        infos.push(info.to_vec());
        at += 4 + len;
    }
    Ok(Ok(Slice {
        digest,
        nranks,
        nroots,
        index,
        infos,
    }))
}

/// The most bytes root 0's answer may carry for `nranks` ranks: every info in full
/// (the table), or every rank missing with a reason (the failure report).
pub(crate) fn max_full(nranks: usize) -> usize {
    12 + nranks * (8 + MAX_INFO) + 4 * nranks + 8 + MAX_INFO
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_cover_every_rank_once_in_order() {
        for nranks in 1..40 {
            for nroots in 1..=nranks {
                let mut next = 0;
                for root in 0..nroots {
                    let s = slice(root, nranks, nroots);
                    assert_eq!(s.start, next, "{nranks} ranks, {nroots} roots");
                    assert!(!s.is_empty());
                    for r in s.clone() {
                        assert_eq!(root_of(r, nranks, nroots), root);
                    }
                    next = s.end;
                }
                assert_eq!(next, nranks);
            }
        }
        // NCCL's examples: 8 ranks on 2 roots are 0-3 and 4-7; 5 on 3 are 0-1, 2-3, 4.
        assert_eq!(slice(1, 8, 2), 4..8);
        assert_eq!(
            (0..3).map(|i| slice(i, 5, 3)).collect::<Vec<_>>(),
            [0..2, 2..4, 4..5]
        );
    }

    #[test]
    fn slices_round_trip_and_need_their_bytes() {
        let s = Slice {
            digest: 77,
            nranks: 5,
            nroots: 3,
            index: 1,
            infos: vec![b"abc".to_vec(), vec![]],
        };
        let t = [3u8; 16];
        let b = encode_slice(&t, &s);
        for cut in 0..b.len() {
            assert!(
                matches!(parse_slice(&b[..cut], &t), Err(k) if k > 0),
                "cut {cut}"
            );
        }
        let got = parse_slice(&b, &t).unwrap().unwrap();
        assert_eq!(
            (got.digest, got.nranks, got.nroots, got.index, got.infos),
            (77, 5, 3, 1, s.infos.clone())
        );
        assert!(parse_slice(&b, &[4; 16]).unwrap().is_err());
        let mut wrong = b.clone();
        wrong[46] = 3; // root 1 of 3 gathers 2 ranks, not 3
        assert!(parse_slice(&wrong, &t).unwrap().is_err());
    }

    #[test]
    fn slice_parsing_survives_mutated_input() {
        let s = Slice {
            digest: 1,
            nranks: 4,
            nroots: 2,
            index: 1,
            infos: vec![vec![9; 30], vec![8; 3]],
        };
        let t = [3u8; 16];
        crate::fuzz::mutations(&encode_slice(&t, &s), 30_000, |b| {
            if let Ok(Ok(s)) = parse_slice(b, &t) {
                assert!(s.infos.iter().all(|i| i.len() <= b.len()));
            }
        });
    }
}
