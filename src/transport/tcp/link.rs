//! The TCP link: lanes of sockets to one peer and a control socket.

use crate::error::{Error, Result};
use crate::header::{ControlFrames, ControlReader, GOODBYE};
use crate::sys;
use crate::transport::{Direction, Link, LinkClass, WaitHandle};
use std::io;
use std::net::TcpStream;
use std::os::fd::AsRawFd;

/// A link to one peer over `nsocks` TCP sockets, plus one more for control
/// messages (error reports, goodbye; see `header`), which is also how a peer's
/// death is noticed while no data flows to it.
pub struct TcpLink {
    pub(super) peer: usize,
    pub(super) socks: Vec<TcpStream>,
    pub(super) control: TcpStream,
    pub(super) ctl: ControlReader,
}

impl Drop for TcpLink {
    fn drop(&mut self) {
        let _ = sys::send_nosignal(self.control.as_raw_fd(), &ControlFrames::frame(GOODBYE));
    }
}

impl TcpLink {
    /// The socket of `lane`, for a transport that negotiates over it (rdma).
    pub(crate) fn socket(&self, lane: usize) -> Option<&TcpStream> {
        self.socks.get(lane)
    }

    fn fail(&self, what: &str, e: io::Error) -> Error {
        match e.kind() {
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::UnexpectedEof => Error::PeerLost {
                rank: self.peer,
                reason: format!("{what}: {e}"),
            },
            _ => Error::io(format!("{what} peer rank {}", self.peer), e),
        }
    }
}

impl Link for TcpLink {
    fn peer(&self) -> usize {
        self.peer
    }

    fn lanes(&self) -> usize {
        self.socks.len()
    }

    fn send_some(&mut self, lane: usize, buf: &[u8]) -> Result<usize> {
        sys::send_nosignal(self.socks[lane].as_raw_fd(), buf).map_err(|e| self.fail("send to", e))
    }

    fn send_gather(&mut self, lane: usize, bufs: &[&[u8]]) -> Result<usize> {
        sys::send_gather(self.socks[lane].as_raw_fd(), bufs).map_err(|e| self.fail("send to", e))
    }

    fn recv_some(&mut self, lane: usize, buf: &mut [u8]) -> Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        match sys::recv_nowait(self.socks[lane].as_raw_fd(), buf) {
            Ok(Some(0)) => Err(Error::PeerLost {
                rank: self.peer,
                reason: "connection closed (EOF)".into(),
            }),
            Ok(Some(n)) => Ok(n),
            Ok(None) => Ok(0),
            Err(e) => Err(self.fail("recv from", e)),
        }
    }

    fn send_control(&mut self, msg: &[u8]) -> Result<bool> {
        // Best effort: a few bytes on an idle socket; a peer that is gone is not news.
        let _ = sys::send_nosignal(self.control.as_raw_fd(), &ControlFrames::frame(msg));
        Ok(true)
    }

    fn recv_control(&mut self) -> Result<Option<Vec<u8>>> {
        let fd = self.control.as_raw_fd();
        if let Err(e) = self.ctl.pump(fd) {
            return Err(self.fail("control channel of", e));
        }
        if let Some(m) = self.ctl.next() {
            return Ok(Some(m));
        }
        if self.ctl.died() {
            return Err(Error::PeerLost {
                rank: self.peer,
                reason: "control connection closed without a goodbye (process died?)".into(),
            });
        }
        Ok(None)
    }

    fn control_handle(&self) -> Option<WaitHandle> {
        Some(WaitHandle {
            fd: self.control.as_raw_fd(),
            events: libc::POLLIN,
            doorbell: false,
        })
    }

    fn wait_handles(&self, lane: usize, dir: Direction, out: &mut Vec<WaitHandle>) {
        out.push(WaitHandle {
            fd: self.socks[lane].as_raw_fd(),
            events: match dir {
                Direction::Send => libc::POLLOUT,
                Direction::Recv => libc::POLLIN,
            },
            doorbell: false,
        });
    }

    fn class(&self) -> LinkClass {
        LinkClass::Tcp
    }
}
