//! In-process transport: ranks are threads, each direction of each lane is a
//! bounded byte ring, and each rank has one eventfd doorbell that peers ring after
//! they add data or free space. Used to test every algorithm with many ranks in one
//! process; it behaves like a socket (bounded buffer, partial writes, EOF on drop).

use crate::error::{Error, Result};
use crate::header::GOODBYE;
use crate::sys::EventFd;
use crate::transport::{Direction, Link, WaitHandle};
use std::collections::VecDeque;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// One direction of one lane.
struct Pipe {
    bytes: Mutex<VecDeque<u8>>,
    capacity: usize,
    closed: AtomicBool,
}

/// One end of an in-process link.
pub struct MemLink {
    me: usize,
    peer: usize,
    tx: Vec<Arc<Pipe>>,
    rx: Vec<Arc<Pipe>>,
    my_bell: Arc<EventFd>,
    peer_bell: Arc<EventFd>,
    /// Control messages to the peer, and from it.
    ctl_tx: ControlQueue,
    ctl_rx: ControlQueue,
    /// The peer closed its link after saying goodbye.
    bye: bool,
}

/// Control messages from one rank to another.
type ControlQueue = Arc<Mutex<VecDeque<Vec<u8>>>>;

/// Builds a full mesh of in-process links for `nranks` ranks with `lanes` lanes per
/// link and `capacity` bytes of buffer per lane and direction. Entry `r` holds rank
/// `r`'s links, indexed by peer (`None` for itself).
pub fn mesh(nranks: usize, lanes: usize, capacity: usize) -> Result<Vec<Vec<Option<MemLink>>>> {
    let lanes = lanes.max(1);
    let bells = (0..nranks)
        .map(|_| EventFd::new().map(Arc::new))
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(|e| Error::io("creating in-process doorbells", e))?;
    let pipe = || {
        Arc::new(Pipe {
            bytes: Mutex::new(VecDeque::with_capacity(capacity)),
            capacity: capacity.max(1),
            closed: AtomicBool::new(false),
        })
    };
    // pipes[a][b]: lanes from a to b.
    let pipes: Vec<Vec<Vec<Arc<Pipe>>>> = (0..nranks)
        .map(|_| {
            (0..nranks)
                .map(|_| (0..lanes).map(|_| pipe()).collect())
                .collect()
        })
        .collect();
    // ctl[a][b]: control messages from a to b.
    let ctl: Vec<Vec<ControlQueue>> = (0..nranks)
        .map(|_| (0..nranks).map(|_| Arc::default()).collect())
        .collect();
    Ok((0..nranks)
        .map(|me| {
            (0..nranks)
                .map(|peer| {
                    (peer != me).then(|| MemLink {
                        me,
                        peer,
                        tx: pipes[me][peer].clone(),
                        rx: pipes[peer][me].clone(),
                        my_bell: bells[me].clone(),
                        peer_bell: bells[peer].clone(),
                        ctl_tx: ctl[me][peer].clone(),
                        ctl_rx: ctl[peer][me].clone(),
                        bye: false,
                    })
                })
                .collect()
        })
        .collect())
}

impl MemLink {
    fn lost(&self) -> Error {
        Error::PeerLost {
            rank: self.peer,
            reason: format!("in-process peer of rank {} closed its link", self.me),
        }
    }
}

impl Link for MemLink {
    fn peer(&self) -> usize {
        self.peer
    }

    fn lanes(&self) -> usize {
        self.tx.len()
    }

    fn send_some(&mut self, lane: usize, buf: &[u8]) -> Result<usize> {
        let pipe = &self.tx[lane];
        if pipe.closed.load(Ordering::Acquire) {
            return Err(self.lost());
        }
        let n = {
            let mut q = pipe.bytes.lock().expect("pipe lock poisoned");
            let n = buf.len().min(pipe.capacity - q.len());
            q.extend(&buf[..n]);
            n
        };
        if n > 0 {
            self.peer_bell.ring();
        }
        Ok(n)
    }

    fn recv_some(&mut self, lane: usize, buf: &mut [u8]) -> Result<usize> {
        let pipe = &self.rx[lane];
        // Read before the queue: a peer pushes its last bytes before it closes, so a
        // pipe seen closed here and then found empty has nothing more to come.
        let closed = pipe.closed.load(Ordering::Acquire);
        let n = {
            let mut q = pipe.bytes.lock().expect("pipe lock poisoned");
            let n = buf.len().min(q.len());
            let (front, back) = q.as_slices();
            let k = n.min(front.len());
            buf[..k].copy_from_slice(&front[..k]);
            buf[k..n].copy_from_slice(&back[..n - k]);
            q.drain(..n);
            n
        };
        if n > 0 {
            self.peer_bell.ring();
        } else if !buf.is_empty() && closed {
            return Err(self.lost());
        }
        Ok(n)
    }

    fn send_control(&mut self, msg: &[u8]) -> Result<bool> {
        self.ctl_tx
            .lock()
            .expect("control queue poisoned")
            .push_back(msg.to_vec());
        self.peer_bell.ring();
        Ok(true)
    }

    fn recv_control(&mut self) -> Result<Option<Vec<u8>>> {
        // Closed is read first: a peer queues its goodbye before closing, so a close
        // seen here has its goodbye already queued below.
        let closed = self.rx.iter().any(|p| p.closed.load(Ordering::Acquire));
        loop {
            let msg = self
                .ctl_rx
                .lock()
                .expect("control queue poisoned")
                .pop_front();
            match msg {
                Some(m) if m == GOODBYE => self.bye = true,
                Some(m) => return Ok(Some(m)),
                None => break,
            }
        }
        if closed && !self.bye {
            return Err(Error::PeerLost {
                rank: self.peer,
                reason: "in-process peer closed its link without saying goodbye".into(),
            });
        }
        Ok(None)
    }

    fn control_handle(&self) -> Option<WaitHandle> {
        Some(WaitHandle {
            fd: self.my_bell.as_raw_fd(),
            events: libc::POLLIN,
            doorbell: true,
        })
    }

    fn wait_handles(&self, _lane: usize, _dir: Direction, out: &mut Vec<WaitHandle>) {
        out.push(WaitHandle {
            fd: self.my_bell.as_raw_fd(),
            events: libc::POLLIN,
            doorbell: true,
        });
    }

    fn class(&self) -> crate::transport::LinkClass {
        crate::transport::LinkClass::Mem
    }
}

#[cfg(test)]
impl MemLink {
    /// Closes this end as a rank that died would: its pipes close, no goodbye is
    /// queued (the conformance tests' dead peer; `Drop` always says goodbye).
    pub(crate) fn close_without_goodbye(self) {
        for p in self.tx.iter().chain(&self.rx) {
            p.closed.store(true, Ordering::Release);
        }
        self.peer_bell.ring();
        // Skips `Drop`; the pipes and doorbells it would release leak (tests only).
        std::mem::forget(self);
    }
}

impl Drop for MemLink {
    fn drop(&mut self) {
        let _ = self.send_control(GOODBYE);
        for p in self.tx.iter().chain(&self.rx) {
            p.closed.store(true, Ordering::Release);
        }
        self.peer_bell.ring();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_partial_writes_and_eof() {
        let mut m = mesh(2, 1, 8).unwrap();
        let mut b = m[1][0].take().unwrap();
        let mut a = m[0][1].take().unwrap();
        assert_eq!(a.send_some(0, &[1; 20]).unwrap(), 8);
        assert_eq!(a.send_some(0, &[1; 20]).unwrap(), 0);
        let mut got = [0u8; 5];
        assert_eq!(b.recv_some(0, &mut got).unwrap(), 5);
        assert_eq!(a.send_some(0, &[2; 20]).unwrap(), 5);
        drop(a);
        let mut rest = [0u8; 32];
        assert_eq!(b.recv_some(0, &mut rest).unwrap(), 8);
        assert_eq!(&rest[..8], &[1, 1, 1, 2, 2, 2, 2, 2]);
        assert!(matches!(
            b.recv_some(0, &mut rest),
            Err(Error::PeerLost { rank: 0, .. })
        ));
    }
}
