//! The RDMA link protocol, with no verbs calls of its own: [`RdmaLink`] drives a
//! [`Verbs`] implementation (real queue pairs in `verbs.rs`, a fake in the tests
//! below), so credits, slot bookkeeping and error completions are tested without
//! hardware.
//!
//! Per lane there is one RC queue pair and, on each side, `slots` send slots and
//! `slots` receive slots of `slot_bytes` each in registered memory. A sender
//! copies up to `slot_bytes` into its send slot `k % slots` and RDMA-writes it,
//! with immediate = length, into the peer's receive slot `k % slots`; the
//! immediate consumes one pre-posted receive and tells the peer the slot is full.
//! The sender holds one credit per free peer slot (initially `slots`) and reuses a
//! local slot only after its write completed. When the reader has copied a slot
//! out it returns the credit with a zero-byte write whose immediate has the top
//! bit set and the count below. Each side keeps `2 * slots` receives posted per
//! lane (data plus credit messages, each bounded by `slots` in flight) and
//! reposts one per receive completion.

use crate::error::{Error, Result};
use crate::transport::rdma::ibv::wc_status_name;
use crate::transport::{Direction, Link, WaitHandle};
use std::io;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

/// Immediate data of a credit return: top bit set, count in the low bits.
pub(crate) const CREDIT_BIT: u32 = 1 << 31;
/// How often an idle link checks for device events (port down).
const CHECK_EVERY: Duration = Duration::from_millis(2);

/// One work completion, as the protocol needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Completion {
    /// The `wr_id` given when posting (see [`WrId`]).
    pub wr_id: u64,
    /// `enum ibv_wc_status` (0 = success).
    pub status: u32,
    /// Vendor syndrome, for error messages.
    pub vendor_err: u32,
    /// A receive completion (`IBV_WC_RECV*`), else a send-side one.
    pub recv: bool,
    /// Bytes written into the receive slot.
    pub byte_len: u32,
    /// Immediate data, host byte order.
    pub imm: u32,
}

/// What a work request was, encoded in its `wr_id`: lane, kind, sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WrId {
    /// A data write from send slot `seq % slots`.
    Data { lane: usize, seq: u32 },
    /// A credit return.
    Credit { lane: usize },
    /// A posted receive.
    Recv { lane: usize },
}

impl WrId {
    pub(crate) fn encode(self) -> u64 {
        let (lane, kind, seq) = match self {
            WrId::Data { lane, seq } => (lane, 0u64, seq),
            WrId::Credit { lane } => (lane, 1, 0),
            WrId::Recv { lane } => (lane, 2, 0),
        };
        (lane as u64) << 40 | kind << 32 | u64::from(seq)
    }

    pub(crate) fn decode(v: u64) -> Option<WrId> {
        let lane = (v >> 40) as usize;
        let seq = v as u32;
        match (v >> 32) & 0xff {
            0 => Some(WrId::Data { lane, seq }),
            1 => Some(WrId::Credit { lane }),
            2 => Some(WrId::Recv { lane }),
            _ => None,
        }
    }
}

/// The verbs a link needs, per connected set of queue pairs (one per lane) that
/// share one completion queue and one registered staging region. Send slot `s` of
/// a lane is written to the peer's receive slot `s` of the same lane.
pub(crate) trait Verbs: Send {
    /// Copies `src` (at most one slot) into send slot `slot` of `lane`.
    fn fill_slot(&mut self, lane: usize, slot: usize, src: &[u8]);
    /// Copies bytes `off..off + dst.len()` of receive slot `slot` of `lane` into `dst`.
    fn read_slot(&self, lane: usize, slot: usize, off: usize, dst: &mut [u8]);
    /// Posts a signaled RDMA WRITE with immediate `imm` of the first `len` bytes of
    /// send slot `slot` to the peer's receive slot `slot` (`len` may be 0).
    fn write_imm(
        &mut self,
        lane: usize,
        wr_id: u64,
        slot: usize,
        len: usize,
        imm: u32,
    ) -> io::Result<()>;
    /// Posts a receive on `lane` (no scatter list: data arrives by RDMA write).
    fn post_recv(&mut self, lane: usize, wr_id: u64) -> io::Result<()>;
    /// Appends the completions available now.
    fn poll(&mut self, out: &mut Vec<Completion>) -> io::Result<()>;
    /// Consumes completion events delivered so far and asks for one on the next
    /// completion; [`Verbs::wait_fd`] becomes readable then.
    fn arm(&mut self) -> io::Result<()>;
    /// What to poll while armed.
    fn wait_fd(&self) -> RawFd;
    /// A device-level failure seen since the last call (port down, device fatal).
    fn fatal(&mut self) -> Option<String>;
}

/// Per-lane protocol state.
#[derive(Debug, Clone)]
struct Lane {
    /// Free receive slots at the peer.
    credits: usize,
    /// Data writes posted; the next uses slot `posted % slots`.
    posted: u64,
    /// Data writes completed locally (their send slots are reusable).
    done: u64,
    /// Credit returns posted and not yet completed.
    credit_writes: usize,
    /// Data slots that arrived from the peer.
    arrived: u64,
    /// Their lengths, by slot.
    lens: Vec<u32>,
    /// Slots fully read by the caller.
    consumed: u64,
    /// Bytes read from slot `consumed % slots`.
    offset: usize,
    /// Slots read but not yet returned to the peer as credits.
    owed: usize,
}

/// A link to one peer over RDMA (one RC queue pair per lane).
pub struct RdmaLink<V: Verbs> {
    peer: usize,
    verbs: V,
    slots: usize,
    slot_bytes: usize,
    lanes: Vec<Lane>,
    comps: Vec<Completion>,
    /// The TCP link this one replaced, kept for its control channel (error
    /// reports, goodbye, and so the death of the peer's process).
    control: Option<Box<dyn Link>>,
    last_check: Instant,
    armed: bool,
    failed: Option<Error>,
    /// Device and port, for logs.
    label: String,
}

impl<V: Verbs> RdmaLink<V> {
    /// Wraps connected queue pairs. Posts the receives; the peer may write as soon
    /// as it knows this side is connected.
    pub(crate) fn new(
        peer: usize,
        mut verbs: V,
        lanes: usize,
        slots: usize,
        slot_bytes: usize,
        control: Option<Box<dyn Link>>,
        label: String,
    ) -> Result<Self> {
        for lane in 0..lanes {
            for _ in 0..2 * slots {
                verbs
                    .post_recv(lane, WrId::Recv { lane }.encode())
                    .map_err(|e| Error::io(format!("ibv_post_recv for peer rank {peer}"), e))?;
            }
        }
        Ok(RdmaLink {
            peer,
            verbs,
            slots,
            slot_bytes,
            lanes: vec![
                Lane {
                    credits: slots,
                    posted: 0,
                    done: 0,
                    credit_writes: 0,
                    arrived: 0,
                    lens: vec![0; slots],
                    consumed: 0,
                    offset: 0,
                    owed: 0,
                };
                lanes
            ],
            comps: Vec::with_capacity(64),
            control,
            last_check: Instant::now(),
            armed: false,
            failed: None,
            label,
        })
    }

    /// The verbs underneath (to connect the queue pairs after the negotiation).
    pub(crate) fn verbs_mut(&mut self) -> &mut V {
        &mut self.verbs
    }

    /// The verbs underneath, read-only.
    pub(crate) fn verbs(&self) -> &V {
        &self.verbs
    }

    /// Sets the link whose control channel this one uses.
    pub(crate) fn set_control(&mut self, control: Box<dyn Link>) {
        self.control = Some(control);
    }

    /// Latches and returns an error: after one, the queue pairs are in an unknown state.
    fn fail(&mut self, e: Error) -> Error {
        self.failed.get_or_insert(e).clone()
    }

    fn io_err(&mut self, what: &str, lane: usize, e: io::Error) -> Error {
        let e = Error::io(
            format!(
                "{what} to peer rank {} on lane {lane} ({})",
                self.peer, self.label
            ),
            e,
        );
        self.fail(e)
    }

    fn protocol(&mut self, lane: usize, what: String) -> Error {
        let e = Error::io(
            format!("RDMA link to peer rank {} lane {lane}", self.peer),
            io::Error::new(io::ErrorKind::InvalidData, what),
        );
        self.fail(e)
    }

    /// Turns an error completion into `PeerLost` (the peer or the path failed) or
    /// `Io` (a local fault), naming the peer, the lane and the verbs status.
    fn completion_error(&mut self, c: &Completion) -> Error {
        let what = match WrId::decode(c.wr_id) {
            Some(WrId::Data { lane, .. }) => format!("data write on lane {lane}"),
            Some(WrId::Credit { lane }) => format!("credit return on lane {lane}"),
            Some(WrId::Recv { lane }) => format!("receive on lane {lane}"),
            None => "unknown work request".into(),
        };
        let status = format!(
            "{} (status {}, vendor error {:#x})",
            wc_status_name(c.status),
            c.status,
            c.vendor_err
        );
        // Flushes, retries exhausted, remote errors and response timeouts mean the
        // other end or the path is gone; the rest are local faults.
        let e = if matches!(c.status, 5 | 9..=13 | 15 | 16 | 20) {
            Error::PeerLost {
                rank: self.peer,
                reason: format!("RDMA {what} failed ({}): {status}", self.label),
            }
        } else {
            Error::io(
                format!("RDMA {what} to peer rank {} ({})", self.peer, self.label),
                io::Error::other(status),
            )
        };
        self.fail(e)
    }

    /// Polls the completion queue and applies every completion.
    fn progress(&mut self) -> Result<bool> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let mut comps = std::mem::take(&mut self.comps);
        comps.clear();
        let polled = self.verbs.poll(&mut comps);
        let mut any = false;
        let mut outcome = Ok(());
        if let Err(e) = polled {
            outcome = Err(self.io_err("ibv_poll_cq", 0, e));
        } else {
            for c in &comps {
                any = true;
                if let Err(e) = self.apply(c) {
                    outcome = Err(e);
                    break;
                }
            }
        }
        self.comps = comps;
        outcome?;
        if any {
            self.armed = false;
        }
        Ok(any)
    }

    fn apply(&mut self, c: &Completion) -> Result<()> {
        if c.status != 0 {
            return Err(self.completion_error(c));
        }
        let id = WrId::decode(c.wr_id);
        let lane = match id {
            Some(WrId::Data { lane, .. } | WrId::Credit { lane } | WrId::Recv { lane })
                if lane < self.lanes.len() =>
            {
                lane
            }
            _ => {
                return Err(self.fail(Error::Internal(format!(
                    "RDMA completion with unknown wr_id {:#x} from peer rank {}",
                    c.wr_id, self.peer
                ))))
            }
        };
        let slots = self.slots;
        match id {
            Some(WrId::Data { .. }) => {
                let l = &mut self.lanes[lane];
                if l.done >= l.posted {
                    return Err(self.protocol(lane, "more write completions than writes".into()));
                }
                l.done += 1;
            }
            Some(WrId::Credit { .. }) => {
                let l = &mut self.lanes[lane];
                l.credit_writes = l.credit_writes.saturating_sub(1);
            }
            Some(WrId::Recv { .. }) => {
                if !c.recv {
                    return Err(self.protocol(lane, "send completion for a receive".into()));
                }
                if let Err(e) = self.verbs.post_recv(lane, c.wr_id) {
                    return Err(self.io_err("ibv_post_recv", lane, e));
                }
                if c.imm & CREDIT_BIT != 0 {
                    let n = (c.imm & !CREDIT_BIT) as usize;
                    let l = &mut self.lanes[lane];
                    if n == 0 || l.credits + n > slots {
                        let have = l.credits;
                        return Err(self.protocol(
                            lane,
                            format!("peer returned {n} credits with {have} of {slots} held"),
                        ));
                    }
                    l.credits += n;
                } else {
                    let len = c.imm as usize;
                    let l = &mut self.lanes[lane];
                    if l.arrived - l.consumed >= slots as u64 {
                        return Err(self.protocol(lane, "peer wrote without a credit".into()));
                    }
                    if len == 0 || len > self.slot_bytes || c.byte_len as usize != len {
                        let got = c.byte_len;
                        return Err(self.protocol(
                            lane,
                            format!("slot of {len} bytes announced, {got} written"),
                        ));
                    }
                    l.lens[(l.arrived % slots as u64) as usize] = len as u32;
                    l.arrived += 1;
                }
            }
            None => unreachable!("decoded above"),
        }
        Ok(())
    }

    /// Nothing could move: check the device (rate-limited), and arm
    /// the completion channel. Returns true if the caller should try once more
    /// (completions arrived while arming).
    fn idle(&mut self) -> Result<bool> {
        if self.last_check.elapsed() >= CHECK_EVERY {
            self.last_check = Instant::now();
            if let Some(why) = self.verbs.fatal() {
                let e = Error::PeerLost {
                    rank: self.peer,
                    reason: format!("RDMA device failed ({}): {why}", self.label),
                };
                return Err(self.fail(e));
            }
        }
        if self.armed {
            return Ok(false);
        }
        if let Err(e) = self.verbs.arm() {
            return Err(self.io_err("ibv_req_notify_cq", 0, e));
        }
        self.armed = true;
        // A completion that landed before the request raises no event: look again.
        self.progress()
    }

    /// Returns freed slots to the peer, if a credit write may be posted.
    fn return_credits(&mut self, lane: usize) -> Result<()> {
        let l = &mut self.lanes[lane];
        if l.owed == 0 || l.credit_writes >= self.slots {
            return Ok(());
        }
        let n = l.owed as u32;
        if let Err(e) =
            self.verbs
                .write_imm(lane, WrId::Credit { lane }.encode(), 0, 0, CREDIT_BIT | n)
        {
            return Err(self.io_err("ibv_post_send (credit)", lane, e));
        }
        let l = &mut self.lanes[lane];
        l.owed = 0;
        l.credit_writes += 1;
        Ok(())
    }

    fn try_send(&mut self, lane: usize, buf: &[u8]) -> Result<usize> {
        let mut sent = 0;
        while sent < buf.len() {
            let l = &self.lanes[lane];
            if l.credits == 0 || l.posted - l.done >= self.slots as u64 {
                break;
            }
            let seq = l.posted;
            let slot = (seq % self.slots as u64) as usize;
            let n = (buf.len() - sent).min(self.slot_bytes);
            self.verbs.fill_slot(lane, slot, &buf[sent..sent + n]);
            let id = WrId::Data {
                lane,
                seq: seq as u32,
            };
            if let Err(e) = self.verbs.write_imm(lane, id.encode(), slot, n, n as u32) {
                return Err(self.io_err("ibv_post_send", lane, e));
            }
            let l = &mut self.lanes[lane];
            l.credits -= 1;
            l.posted += 1;
            sent += n;
        }
        Ok(sent)
    }

    fn try_recv(&mut self, lane: usize, buf: &mut [u8]) -> Result<usize> {
        let slots = self.slots as u64;
        let mut got = 0;
        while got < buf.len() {
            let l = &self.lanes[lane];
            if l.consumed == l.arrived {
                break;
            }
            let slot = (l.consumed % slots) as usize;
            let len = l.lens[slot] as usize;
            let off = l.offset;
            let n = (len - off).min(buf.len() - got);
            self.verbs
                .read_slot(lane, slot, off, &mut buf[got..got + n]);
            got += n;
            let l = &mut self.lanes[lane];
            l.offset += n;
            if l.offset == len {
                l.offset = 0;
                l.consumed += 1;
                l.owed += 1;
            }
        }
        self.return_credits(lane)?;
        Ok(got)
    }
}

/// How long a closing link waits for the peer to take in what was written to it.
const LINGER: std::time::Duration = std::time::Duration::from_secs(1);

impl<V: Verbs> Drop for RdmaLink<V> {
    /// Lingers (bounded) until every write has completed and the peer has returned
    /// every credit, and our own credit returns have completed: a peer still reading
    /// our last message returns a credit for it, and that write must find our queue
    /// pair alive, or the peer's link fails on a job that finished well.
    fn drop(&mut self) {
        let until = Instant::now() + LINGER;
        while self.failed.is_none() && Instant::now() < until {
            let slots = self.slots;
            let quiet = self
                .lanes
                .iter()
                .all(|l| l.credits == slots && l.credit_writes == 0 && l.done == l.posted);
            if quiet || self.progress().is_err() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
    }
}

impl<V: Verbs> Link for RdmaLink<V> {
    fn peer(&self) -> usize {
        self.peer
    }

    fn lanes(&self) -> usize {
        self.lanes.len()
    }

    fn send_some(&mut self, lane: usize, buf: &[u8]) -> Result<usize> {
        loop {
            self.progress()?;
            let n = self.try_send(lane, buf)?;
            if n > 0 || buf.is_empty() || !self.idle()? {
                return Ok(n);
            }
        }
    }

    fn recv_some(&mut self, lane: usize, buf: &mut [u8]) -> Result<usize> {
        loop {
            self.progress()?;
            let n = self.try_recv(lane, buf)?;
            if n > 0 || buf.is_empty() || !self.idle()? {
                return Ok(n);
            }
        }
    }

    fn wait_handles(&self, _lane: usize, _dir: Direction, out: &mut Vec<WaitHandle>) {
        out.push(WaitHandle {
            fd: self.verbs.wait_fd(),
            events: libc::POLLIN,
            doorbell: false,
        });
    }

    fn send_control(&mut self, msg: &[u8]) -> Result<bool> {
        match &mut self.control {
            Some(c) => c.send_control(msg),
            None => Ok(false),
        }
    }

    fn recv_control(&mut self) -> Result<Option<Vec<u8>>> {
        match &mut self.control {
            Some(c) => c.recv_control(),
            None => Ok(None),
        }
    }

    fn control_handle(&self) -> Option<WaitHandle> {
        self.control.as_ref().and_then(|c| c.control_handle())
    }

    fn class(&self) -> crate::transport::LinkClass {
        crate::transport::LinkClass::Rdma
    }
}

#[cfg(test)]
pub(crate) mod fake {
    //! Two in-memory "queue pair sets" wired back to back: a write copies bytes into
    //! the peer's receive slot and queues a receive completion there, as an RC
    //! connection would. Tests can hold completions back, inject error
    //! completions and device failures.

    use super::*;
    use crate::sys::EventFd;
    use std::collections::VecDeque;
    use std::os::fd::AsRawFd;
    use std::sync::{Arc, Mutex};

    #[derive(Default)]
    pub(crate) struct Side {
        /// recv[lane][slot]: this side's receive slots.
        pub recv: Vec<Vec<Vec<u8>>>,
        /// Receives posted per lane.
        pub posted_recvs: Vec<usize>,
        /// Completions waiting to be polled.
        pub cq: VecDeque<Completion>,
        /// Device failure to report.
        pub fatal: Option<String>,
        /// Set by a test: the next data write completes with this status.
        pub fail_next_write: Option<u32>,
        /// Receives that arrived with no receive posted (an RNR in hardware).
        pub rnr: usize,
    }

    pub(crate) struct FakeVerbs {
        pub me: Arc<Mutex<Side>>,
        pub peer: Arc<Mutex<Side>>,
        send: Vec<Vec<Vec<u8>>>,
        bell: Arc<EventFd>,
        peer_bell: Arc<EventFd>,
        slot_bytes: usize,
    }

    /// A connected pair of fakes with `lanes` lanes of `slots` slots.
    pub(crate) fn pair(lanes: usize, slots: usize, slot_bytes: usize) -> (FakeVerbs, FakeVerbs) {
        let side = || {
            Arc::new(Mutex::new(Side {
                recv: vec![vec![vec![0; slot_bytes]; slots]; lanes],
                posted_recvs: vec![0; lanes],
                ..Side::default()
            }))
        };
        let (a, b) = (side(), side());
        let (ba, bb) = (
            Arc::new(EventFd::new().unwrap()),
            Arc::new(EventFd::new().unwrap()),
        );
        let mk = |me: &Arc<Mutex<Side>>,
                  peer: &Arc<Mutex<Side>>,
                  bell: &Arc<EventFd>,
                  pb: &Arc<EventFd>| FakeVerbs {
            me: me.clone(),
            peer: peer.clone(),
            send: vec![vec![vec![0; slot_bytes]; slots]; lanes],
            bell: bell.clone(),
            peer_bell: pb.clone(),
            slot_bytes,
        };
        (mk(&a, &b, &ba, &bb), mk(&b, &a, &bb, &ba))
    }

    impl Verbs for FakeVerbs {
        fn fill_slot(&mut self, lane: usize, slot: usize, src: &[u8]) {
            self.send[lane][slot][..src.len()].copy_from_slice(src);
        }
        fn read_slot(&self, lane: usize, slot: usize, off: usize, dst: &mut [u8]) {
            let me = self.me.lock().unwrap();
            dst.copy_from_slice(&me.recv[lane][slot][off..off + dst.len()]);
        }
        fn write_imm(
            &mut self,
            lane: usize,
            wr_id: u64,
            slot: usize,
            len: usize,
            imm: u32,
        ) -> io::Result<()> {
            assert!(len <= self.slot_bytes);
            let mut me = self.me.lock().unwrap();
            if let Some(status) = me.fail_next_write.take() {
                me.cq.push_back(Completion {
                    wr_id,
                    status,
                    vendor_err: 0x81,
                    ..Completion::default()
                });
                return Ok(());
            }
            let mut peer = self.peer.lock().unwrap();
            peer.recv[lane][slot][..len].copy_from_slice(&self.send[lane][slot][..len]);
            if peer.posted_recvs[lane] == 0 {
                peer.rnr += 1;
            } else {
                peer.posted_recvs[lane] -= 1;
            }
            peer.cq.push_back(Completion {
                wr_id: WrId::Recv { lane }.encode(),
                recv: true,
                byte_len: len as u32,
                imm,
                ..Completion::default()
            });
            me.cq.push_back(Completion {
                wr_id,
                ..Completion::default()
            });
            self.peer_bell.ring();
            self.bell.ring();
            Ok(())
        }
        fn post_recv(&mut self, lane: usize, _wr_id: u64) -> io::Result<()> {
            self.me.lock().unwrap().posted_recvs[lane] += 1;
            Ok(())
        }
        fn poll(&mut self, out: &mut Vec<Completion>) -> io::Result<()> {
            out.extend(self.me.lock().unwrap().cq.drain(..));
            Ok(())
        }
        fn arm(&mut self) -> io::Result<()> {
            crate::sys::drain_eventfd(self.bell.as_raw_fd());
            Ok(())
        }
        fn wait_fd(&self) -> RawFd {
            self.bell.as_raw_fd()
        }
        fn fatal(&mut self) -> Option<String> {
            self.me.lock().unwrap().fatal.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::{pair, FakeVerbs};
    use super::*;

    fn links(
        lanes: usize,
        slots: usize,
        slot_bytes: usize,
    ) -> (RdmaLink<FakeVerbs>, RdmaLink<FakeVerbs>) {
        let (a, b) = pair(lanes, slots, slot_bytes);
        (
            RdmaLink::new(1, a, lanes, slots, slot_bytes, None, "fake:1".into()).unwrap(),
            RdmaLink::new(0, b, lanes, slots, slot_bytes, None, "fake:1".into()).unwrap(),
        )
    }

    /// Moves `data` from a to b on `lane` by alternating non-blocking calls with
    /// reads of `step` bytes, as the executor would; returns what b received.
    fn stream(
        a: &mut RdmaLink<FakeVerbs>,
        b: &mut RdmaLink<FakeVerbs>,
        lane: usize,
        data: &[u8],
        step: usize,
    ) -> Vec<u8> {
        let mut sent = 0;
        let mut got = Vec::new();
        let mut buf = vec![0u8; step];
        for _ in 0..1_000_000 {
            if got.len() == data.len() {
                return got;
            }
            if sent < data.len() {
                sent += a.send_some(lane, &data[sent..]).unwrap();
            }
            let n = b.recv_some(lane, &mut buf).unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        panic!("stalled after {} of {} bytes", got.len(), data.len());
    }

    #[test]
    fn wr_ids_round_trip() {
        for id in [
            WrId::Data { lane: 0, seq: 0 },
            WrId::Data {
                lane: 63,
                seq: u32::MAX,
            },
            WrId::Credit { lane: 5 },
            WrId::Recv { lane: 7 },
        ] {
            assert_eq!(WrId::decode(id.encode()), Some(id));
        }
        assert_eq!(WrId::decode(9 << 32), None);
    }

    #[test]
    fn bytes_stream_through_slots_in_order() {
        let (mut a, mut b) = links(2, 4, 64);
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        for step in [1, 13, 64, 100, 4096] {
            assert_eq!(stream(&mut a, &mut b, 1, &data, step), data, "step {step}");
            assert_eq!(stream(&mut b, &mut a, 0, &data[..999], step), &data[..999]);
        }
        // Every credit came back: each lane can fill all peer slots again.
        for l in &a.lanes {
            assert_eq!(l.credits, 4);
        }
        assert_eq!(
            a.verbs.peer.lock().unwrap().rnr,
            0,
            "receives were always posted"
        );
    }

    #[test]
    fn credits_stop_the_sender_until_the_reader_frees_a_slot() {
        let (mut a, mut b) = links(1, 3, 8);
        // Three slots of 8 bytes: 24 bytes go, the rest waits.
        assert_eq!(a.send_some(0, &[1u8; 100]).unwrap(), 24);
        assert_eq!(a.send_some(0, &[1u8; 100]).unwrap(), 0);
        assert_eq!(a.lanes[0].credits, 0);
        // Reading part of a slot frees nothing.
        let mut buf = [0u8; 5];
        assert_eq!(b.recv_some(0, &mut buf).unwrap(), 5);
        assert_eq!(a.send_some(0, &[2u8; 100]).unwrap(), 0);
        // Finishing the slot returns one credit: one more slot's worth goes.
        assert_eq!(b.recv_some(0, &mut buf[..3]).unwrap(), 3);
        assert_eq!(a.send_some(0, &[2u8; 100]).unwrap(), 8);
        assert_eq!(a.lanes[0].credits, 0);
        // The receiver never had more than its slots in flight.
        let l = &b.lanes[0];
        assert!(l.arrived - l.consumed <= 3);
    }

    #[test]
    fn a_send_slot_is_reused_only_after_its_write_completed() {
        let (mut a, mut b) = links(1, 2, 4);
        // Hold a's send completions back: it has credits but no free local slot.
        assert_eq!(a.send_some(0, &[9u8; 8]).unwrap(), 8);
        let held: Vec<Completion> = a.verbs.me.lock().unwrap().cq.drain(..).collect();
        assert_eq!(held.len(), 2);
        let mut buf = [0u8; 8];
        assert_eq!(b.recv_some(0, &mut buf).unwrap(), 8);
        // Credits are back (in a's CQ), but the writes are not complete.
        assert_eq!(a.send_some(0, &[1u8; 4]).unwrap(), 0);
        assert_eq!(a.lanes[0].credits, 2);
        a.verbs.me.lock().unwrap().cq.extend(held);
        assert_eq!(a.send_some(0, &[1u8; 4]).unwrap(), 4);
    }

    #[test]
    fn error_completions_name_the_peer_and_status_and_latch() {
        let (mut a, _b) = links(1, 2, 16);
        a.verbs.me.lock().unwrap().fail_next_write = Some(12);
        assert_eq!(a.send_some(0, b"hello").unwrap(), 5);
        let e = a.recv_some(0, &mut [0u8; 4]).unwrap_err();
        match &e {
            Error::PeerLost { rank, reason } => {
                assert_eq!(*rank, 1);
                assert!(reason.contains("IBV_WC_RETRY_EXC_ERR"), "{reason}");
                assert!(reason.contains("status 12"), "{reason}");
                assert!(reason.contains("lane 0"), "{reason}");
            }
            e => panic!("{e}"),
        }
        // Latched: every later call returns it.
        assert!(matches!(a.send_some(0, b"x"), Err(Error::PeerLost { .. })));
        // A local fault is Io, naming the peer and the status.
        let (mut c, _d) = links(1, 2, 16);
        c.verbs.me.lock().unwrap().fail_next_write = Some(4);
        c.send_some(0, b"x").unwrap();
        let e = c.send_some(0, b"y").unwrap_err().to_string();
        assert!(
            e.contains("peer rank 1") && e.contains("IBV_WC_LOC_PROT_ERR"),
            "{e}"
        );
    }

    #[test]
    fn protocol_violations_are_errors_not_panics() {
        let inject = |c: Completion| {
            let (mut a, _b) = links(1, 2, 16);
            a.verbs.me.lock().unwrap().cq.push_back(c);
            a.recv_some(0, &mut [0u8; 4]).unwrap_err().to_string()
        };
        let recv = WrId::Recv { lane: 0 }.encode();
        let base = Completion {
            wr_id: recv,
            recv: true,
            ..Completion::default()
        };
        // A slot longer than a slot, a length that disagrees, too many credits,
        // an unknown lane, an unknown kind, a write completion with no write.
        for (c, want) in [
            (
                Completion {
                    byte_len: 17,
                    imm: 17,
                    ..base
                },
                "announced",
            ),
            (
                Completion {
                    byte_len: 3,
                    imm: 4,
                    ..base
                },
                "announced",
            ),
            (
                Completion {
                    imm: CREDIT_BIT | 1,
                    ..base
                },
                "credits",
            ),
            (
                Completion {
                    imm: CREDIT_BIT,
                    ..base
                },
                "credits",
            ),
            (
                Completion {
                    wr_id: WrId::Recv { lane: 9 }.encode(),
                    ..base
                },
                "unknown wr_id",
            ),
            (
                Completion {
                    wr_id: 7 << 32,
                    ..base
                },
                "unknown wr_id",
            ),
            (
                Completion {
                    wr_id: WrId::Data { lane: 0, seq: 0 }.encode(),
                    ..Completion::default()
                },
                "more write completions",
            ),
        ] {
            let e = inject(c);
            assert!(e.contains(want), "{c:?}: {e}");
        }
        // A peer writing past its credits.
        let (mut a, _b) = links(1, 1, 16);
        for _ in 0..2 {
            a.verbs.me.lock().unwrap().cq.push_back(Completion {
                byte_len: 1,
                imm: 1,
                ..base
            });
        }
        let e = a.send_some(0, b"x").unwrap_err().to_string();
        assert!(e.contains("without a credit"), "{e}");
    }

    #[test]
    fn device_failure_is_peer_lost_when_idle() {
        let (mut a, _b) = links(1, 2, 16);
        a.verbs.me.lock().unwrap().fatal = Some("IBV_EVENT_PORT_ERR on mlx5_0:1".into());
        a.last_check = Instant::now() - CHECK_EVERY;
        let e = a.recv_some(0, &mut [0u8; 4]).unwrap_err().to_string();
        assert!(
            e.contains("IBV_EVENT_PORT_ERR") && e.contains("rank 1"),
            "{e}"
        );
    }

    #[test]
    fn idle_link_arms_and_its_wait_fd_fires_on_a_completion() {
        let (mut a, mut b) = links(1, 2, 16);
        assert_eq!(b.recv_some(0, &mut [0u8; 4]).unwrap(), 0);
        assert!(b.armed);
        let mut handles = Vec::new();
        b.wait_handles(0, Direction::Recv, &mut handles);
        let mut fds: Vec<libc::pollfd> = handles
            .iter()
            .map(|h| crate::sys::pollfd(h.fd, h.events))
            .collect();
        assert_eq!(crate::sys::poll(&mut fds, Duration::ZERO).unwrap(), 0);
        a.send_some(0, b"ping").unwrap();
        assert_eq!(
            crate::sys::poll(&mut fds, Duration::from_secs(1)).unwrap(),
            1
        );
        let mut buf = [0u8; 4];
        assert_eq!(b.recv_some(0, &mut buf).unwrap(), 4);
        assert_eq!(&buf, b"ping");
        assert!(!b.armed);
    }

    #[test]
    fn control_messages_go_through_the_kept_link() {
        let mut mem = crate::transport::mem::mesh(2, 1, 1024).unwrap();
        let c1 = mem[1][0].take().unwrap();
        let c0 = mem[0][1].take().unwrap();
        let (a, b) = pair(1, 2, 16);
        let mut a = RdmaLink::new(1, a, 1, 2, 16, Some(Box::new(c0)), "fake:1".into()).unwrap();
        let mut b = RdmaLink::new(0, b, 1, 2, 16, None, "fake:1".into()).unwrap();
        assert!(b.control_handle().is_none());
        assert!(!b.send_control(b"x").unwrap());
        b.set_control(Box::new(c1));
        assert!(a.control_handle().is_some());
        assert!(a.send_control(b"report").unwrap());
        assert_eq!(b.recv_control().unwrap().as_deref(), Some(&b"report"[..]));
        assert_eq!(b.recv_control().unwrap(), None);
        // A normal close says goodbye: no error on the other side.
        drop(a);
        assert_eq!(b.recv_control().unwrap(), None);
    }
}
