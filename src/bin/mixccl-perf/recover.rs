//! `--shrink-on-loss`: what a rank does after a call failed because one peer is gone.
//! It names the lost rank and the moment it learnt of it, builds the survivors'
//! communicator with `Communicator::shrink` (no new unique id) and proves it works
//! with one all-reduce checked element by element. Public API only.

use mixccl::{Communicator, Error, ReduceOp, Result};
use std::time::{SystemTime, UNIX_EPOCH};

/// Elements of the check all-reduce.
const CHECK_COUNT: usize = 1 << 20;

/// The one rank an error says is gone: `PeerLost`, or a timeout waiting for it alone.
pub fn lost_rank(e: &Error) -> Option<usize> {
    match e {
        Error::PeerLost { rank, .. } => Some(*rank),
        Error::Timeout { waiting_for, .. } if waiting_for.len() == 1 => Some(waiting_for[0]),
        _ => None,
    }
}

/// Nanoseconds since the Unix epoch, to compare with another process's clock.
pub fn unix_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// Shrinks `comm` without `lost` and runs a checked all-reduce on the survivors;
/// returns the new communicator's size and the wrong elements.
pub fn shrink_and_check(comm: &mut Communicator, lost: usize) -> Result<(usize, usize)> {
    let mut small = comm.shrink(&[lost])?;
    let (rank, n) = (small.rank(), small.nranks());
    let send: Vec<f32> = (0..CHECK_COUNT)
        .map(|i| ((i % 251) * (rank + 1)) as f32)
        .collect();
    let mut recv = vec![0f32; CHECK_COUNT];
    small.all_reduce(&send, &mut recv, ReduceOp::Sum)?;
    // Small integers: every partial sum is exact in f32.
    let factor = n * (n + 1) / 2;
    let wrong = recv
        .iter()
        .enumerate()
        .filter(|(i, v)| **v != ((i % 251) * factor) as f32)
        .count();
    Ok((n, wrong))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn only_single_rank_losses_name_a_rank() {
        let lost = Error::PeerLost {
            rank: 2,
            reason: "EOF".into(),
        };
        assert_eq!(lost_rank(&lost), Some(2));
        let one = Error::Timeout {
            op: "all_reduce #3".into(),
            waiting_for: vec![1],
            after: Duration::from_secs(1),
        };
        assert_eq!(lost_rank(&one), Some(1));
        let two = Error::Timeout {
            op: "all_reduce #3".into(),
            waiting_for: vec![1, 2],
            after: Duration::from_secs(1),
        };
        assert_eq!(lost_rank(&two), None);
        assert_eq!(lost_rank(&Error::Aborted), None);
    }
}
