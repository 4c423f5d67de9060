//! The first bytes on every transport connection, one encoder and decoder for all:
//! `magic:[8] version:u16` (the preamble), then for the connections that admit a
//! rank to a listener `token:[16] from:u32 to:u32` (all little-endian). Each
//! transport appends its own fields after these (TCP: lane and lanes; shm: ring
//! capacity) and picks its magic (`MXDATA`, `MXSHM`, `MXRDMA`), so the bytes on
//! the wire are what each transport always sent. Decoding never panics: a
//! stranger's bytes are a [`TransportError`] for the caller to log or return.

use crate::error::TransportError;
use crate::wire::PROTOCOL_VERSION;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The communicator tokens a listener admits connections for (a listener serves a
/// communicator and those shrunk or split from it), and the last ones it was told
/// to forget.
#[derive(Debug, Default)]
struct LiveTokens {
    live: Vec<[u8; 16]>,
    /// Most recently forgotten last, at most [`FORGOTTEN_KEPT`].
    forgotten: VecDeque<[u8; 16]>,
}

/// How many forgotten tokens a listener remembers, to refuse their connections at
/// once instead of holding them as strangers (a process that shrinks in a loop
/// forgets one per generation; older ones are merely held, then dropped).
const FORGOTTEN_KEPT: usize = 64;

/// What a listener knows of a connection's token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenState {
    /// A communicator using this listener: admitted.
    Live,
    /// Its communicator was destroyed here: refused.
    Forgotten,
    /// Never registered here: a stranger, or a communicator shrunk from one using
    /// this listener that this rank has not shrunk to yet.
    Unknown,
}

impl LiveTokens {
    /// Admits `token` from now on.
    fn register(&mut self, token: [u8; 16]) {
        self.forgotten.retain(|t| *t != token);
        if !self.live.contains(&token) {
            self.live.push(token);
        }
    }

    /// Refuses `token` from now on.
    fn forget(&mut self, token: [u8; 16]) {
        self.live.retain(|t| *t != token);
        self.forgotten.retain(|t| *t != token);
        if self.forgotten.len() == FORGOTTEN_KEPT {
            self.forgotten.pop_front();
        }
        self.forgotten.push_back(token);
    }

    /// Is `token` admitted?
    fn contains(&self, token: &[u8; 16]) -> bool {
        self.live.contains(token)
    }

    /// What this listener knows of `token`.
    fn state(&self, token: &[u8; 16]) -> TokenState {
        if self.live.contains(token) {
            TokenState::Live
        } else if self.forgotten.contains(token) {
            TokenState::Forgotten
        } else {
            TokenState::Unknown
        }
    }
}

/// What a listener admits: the tokens of the communicators using it ([`LiveTokens`]),
/// and the connections whose hello is whole but names a token it does not know yet,
/// held for a while instead of refused ("strangers"): when the survivors of a
/// failure shrink, one that shrank first may connect to a rank still waiting in the
/// parent communicator's call, which registers the shrunk communicator's token only
/// when it shrinks too. Each stranger is admitted once its token is registered,
/// dropped when it is forgotten or has been held [`stranger_hold`] (by then its
/// sender has timed out too). At most `max` are held, so a peer that speaks the
/// protocol with made-up tokens cannot take every descriptor. Both acceptors (TCP
/// data connections, shared-memory offers) keep one, with their own item type.
pub(crate) struct Admission<T> {
    tokens: LiveTokens,
    held: Vec<Stranger<T>>,
}

struct Stranger<T> {
    token: [u8; 16],
    since: Instant,
    until: Instant,
    item: T,
}

impl<T> Default for Admission<T> {
    fn default() -> Self {
        Admission {
            tokens: LiveTokens::default(),
            held: Vec::new(),
        }
    }
}

/// The least time a stranger is held, whatever the waiting call's timeout.
pub(crate) const STRANGER_MIN_HOLD: Duration = Duration::from_secs(5);

/// How long a listener holds a stranger that arrives while a call waits with
/// `timeout`: twice that, at least [`STRANGER_MIN_HOLD`]. The call here may have
/// begun just before the stranger came and wait its whole timeout (for a peer that
/// died before it ever connected, which its sender saw die at once) before this
/// rank shrinks too; meanwhile the sender waits up to its own timeout for this
/// rank. Holding only `timeout` lost the race by a few milliseconds on a loaded
/// machine (`processes_faults`, `sigkill_during_large_allreduces_then_shrink`).
pub(crate) fn stranger_hold(timeout: Duration) -> Duration {
    timeout.saturating_mul(2).max(STRANGER_MIN_HOLD)
}

/// What [`Admission::settle`] hands back: those to admit now, and those to drop
/// with the reason.
pub(crate) type Settled<T> = (Vec<T>, Vec<(T, String)>);

impl<T> Admission<T> {
    /// Admits `token` from now on.
    pub(crate) fn register(&mut self, token: [u8; 16]) {
        self.tokens.register(token);
    }

    /// Refuses `token` from now on, and drops (closes) the strangers carrying it.
    pub(crate) fn forget(&mut self, token: [u8; 16]) {
        self.tokens.forget(token);
        self.held.retain(|s| s.token != token);
    }

    /// Is `token` admitted?
    pub(crate) fn contains(&self, token: &[u8; 16]) -> bool {
        self.tokens.contains(token)
    }

    /// What this listener knows of `token`.
    pub(crate) fn state(&self, token: &[u8; 16]) -> TokenState {
        self.tokens.state(token)
    }

    /// Holds `item`, whose hello carries `token`, for `hold` from now; hands it back
    /// when `max` are held already.
    pub(crate) fn hold(
        &mut self,
        token: [u8; 16],
        hold: Duration,
        max: usize,
        item: T,
    ) -> Result<(), T> {
        if self.held.len() >= max {
            return Err(item);
        }
        let since = Instant::now();
        self.held.push(Stranger {
            token,
            since,
            until: since + hold,
            item,
        });
        Ok(())
    }

    /// Takes out the strangers whose token is registered now (first, whatever their
    /// age), and those to drop at `now`: their token forgotten, or their time up.
    pub(crate) fn settle(&mut self, now: Instant) -> Settled<T> {
        let (mut admit, mut drop) = (Vec::new(), Vec::new());
        let mut i = 0;
        while i < self.held.len() {
            let s = &self.held[i];
            let why = match self.tokens.state(&s.token) {
                TokenState::Live => None,
                TokenState::Forgotten => Some("wrong communicator token (destroyed here)".into()),
                TokenState::Unknown if now >= s.until => Some(format!(
                    "wrong communicator token (not registered within {:.1} s)",
                    now.duration_since(s.since).as_secs_f64()
                )),
                TokenState::Unknown => {
                    i += 1;
                    continue;
                }
            };
            let s = self.held.swap_remove(i);
            match why {
                None => admit.push(s.item),
                Some(why) => drop.push((s.item, why)),
            }
        }
        (admit, drop)
    }

    /// How many strangers are held.
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        self.held.len()
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

    #[test]
    fn tokens_are_live_forgotten_or_unknown() {
        let mut t = LiveTokens::default();
        assert_eq!(t.state(&[1; 16]), TokenState::Unknown);
        t.register([1; 16]);
        assert_eq!(t.state(&[1; 16]), TokenState::Live);
        assert!(t.contains(&[1; 16]));
        t.forget([1; 16]);
        assert_eq!(t.state(&[1; 16]), TokenState::Forgotten);
        assert!(!t.contains(&[1; 16]));
        // Registered again (a communicator made anew with the same token).
        t.register([1; 16]);
        assert_eq!(t.state(&[1; 16]), TokenState::Live);
        // Only the last FORGOTTEN_KEPT are remembered.
        for k in 0..=FORGOTTEN_KEPT as u8 {
            t.forget([k + 10; 16]);
        }
        assert_eq!(t.state(&[10; 16]), TokenState::Unknown);
        assert_eq!(t.state(&[11; 16]), TokenState::Forgotten);
        assert_eq!(t.forgotten.len(), FORGOTTEN_KEPT);
        assert_eq!(t.state(&[1; 16]), TokenState::Live);
    }

    #[test]
    fn strangers_wait_for_their_token_within_their_time_and_the_cap() {
        let mut adm: Admission<u32> = Admission::default();
        let long = Duration::from_secs(60);
        assert_eq!(adm.hold([1; 16], long, 3, 1), Ok(()));
        assert_eq!(adm.hold([2; 16], long, 3, 2), Ok(()));
        assert_eq!(adm.hold([3; 16], Duration::ZERO, 3, 3), Ok(()));
        assert_eq!(adm.hold([4; 16], long, 3, 4), Err(4), "over the cap");
        let now = Instant::now();
        // Nothing registered: only the one whose time is up goes.
        let (admit, drop) = adm.settle(now);
        assert!(admit.is_empty());
        assert_eq!(drop.len(), 1);
        assert_eq!(drop[0].0, 3);
        assert!(
            drop[0].1.contains("wrong communicator token"),
            "{}",
            drop[0].1
        );
        adm.register([1; 16]);
        assert!(adm.contains(&[1; 16]));
        // Forgetting a token drops its strangers at once.
        adm.forget([2; 16]);
        assert_eq!(adm.held(), 1);
        assert_eq!(adm.state(&[2; 16]), TokenState::Forgotten);
        let (admit, drop) = adm.settle(now);
        assert_eq!(admit, vec![1]);
        assert!(drop.is_empty());
        assert_eq!(adm.held(), 0);
        // A registered token is admitted even after its time (no pump in between).
        adm.hold([5; 16], Duration::ZERO, 3, 5).unwrap();
        adm.register([5; 16]);
        assert_eq!(adm.settle(now + long).0, vec![5]);
        // A stranger whose token was forgotten before it came is dropped, named so.
        adm.forget([6; 16]);
        adm.hold([6; 16], long, 3, 6).unwrap();
        let (admit, drop) = adm.settle(now);
        assert!(admit.is_empty());
        assert_eq!(drop.len(), 1);
        assert!(drop[0].1.contains("destroyed"), "{}", drop[0].1);
        assert_eq!(stranger_hold(Duration::from_secs(1)), STRANGER_MIN_HOLD);
        assert_eq!(stranger_hold(long), 2 * long);
    }
}
