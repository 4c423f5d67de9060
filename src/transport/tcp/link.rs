//! The TCP link: lanes of sockets to one peer and a control socket.

use super::tls::{TlsFail, TlsStream};
use crate::error::{Error, Result};
use crate::header::{ControlFrames, ControlReader, GOODBYE};
use crate::sys;
use crate::transport::{Direction, Link, LinkClass, WaitHandle};
use std::io;
use std::net::TcpStream;
use std::os::fd::AsRawFd;

/// A link to one peer over `nsocks` TCP sockets, plus one more for control
/// messages (error reports, goodbye; see `header`), which is also how a peer's
/// death is noticed while no data flows to it. Where `MIXCCL_TLS` encrypts the
/// link, every socket carries a TLS session (`tls`).
pub struct TcpLink {
    pub(super) peer: usize,
    pub(super) socks: Vec<TcpStream>,
    pub(super) control: TcpStream,
    pub(super) ctl: ControlReader,
    pub(super) tls: Option<Box<TlsSessions>>,
}

/// The TLS sessions of an encrypted link: one per lane, one for control.
pub(super) struct TlsSessions {
    pub(super) lanes: Vec<TlsStream>,
    pub(super) control: TlsStream,
}

impl Drop for TcpLink {
    fn drop(&mut self) {
        let bye = ControlFrames::frame(GOODBYE);
        let fd = self.control.as_raw_fd();
        match &mut self.tls {
            Some(t) => {
                if t.control.queue(&bye).is_ok() {
                    let _ = t.control.flush(fd);
                }
            }
            None => {
                let _ = sys::send_nosignal(fd, &bye);
            }
        }
    }
}

impl TcpLink {
    /// The socket of `lane`, for a transport that negotiates over it (rdma).
    /// None on an encrypted link, whose bytes all go through TLS.
    pub(crate) fn socket(&self, lane: usize) -> Option<&TcpStream> {
        if self.tls.is_some() {
            return None;
        }
        self.socks.get(lane)
    }

    /// Whether the link carries TLS.
    #[cfg(test)]
    pub(crate) fn encrypted(&self) -> bool {
        self.tls.is_some()
    }

    fn tls_fail(&self, what: &str, e: TlsFail) -> Error {
        match e {
            TlsFail::Io(e) => self.fail(what, e),
            TlsFail::Tls(e) => Error::PeerLost {
                rank: self.peer,
                reason: format!("{what}: TLS: {e}"),
            },
        }
    }

    fn fail(&self, what: &str, e: io::Error) -> Error {
        if crate::error::peer_gone(&e) {
            Error::PeerLost {
                rank: self.peer,
                reason: format!("{what}: {e}"),
            }
        } else {
            Error::io(format!("{what} peer rank {}", self.peer), e)
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
        if let Some(t) = &mut self.tls {
            let fd = self.socks[lane].as_raw_fd();
            let r = t.lanes[lane].send(fd, &[buf]);
            return r.map_err(|e| self.tls_fail("send to", e));
        }
        sys::send_nosignal(self.socks[lane].as_raw_fd(), buf).map_err(|e| self.fail("send to", e))
    }

    fn send_gather(&mut self, lane: usize, bufs: &[&[u8]]) -> Result<usize> {
        if let Some(t) = &mut self.tls {
            let fd = self.socks[lane].as_raw_fd();
            let r = t.lanes[lane].send(fd, bufs);
            return r.map_err(|e| self.tls_fail("send to", e));
        }
        sys::send_gather(self.socks[lane].as_raw_fd(), bufs).map_err(|e| self.fail("send to", e))
    }

    fn recv_some(&mut self, lane: usize, buf: &mut [u8]) -> Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if let Some(t) = &mut self.tls {
            let fd = self.socks[lane].as_raw_fd();
            return match t.lanes[lane].recv(fd, buf) {
                Ok(Some(n)) => Ok(n),
                Ok(None) => Err(Error::PeerLost {
                    rank: self.peer,
                    reason: "connection closed (EOF)".into(),
                }),
                Err(e) => Err(self.tls_fail("recv from", e)),
            };
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
        let fd = self.control.as_raw_fd();
        match &mut self.tls {
            Some(t) => {
                if t.control.queue(&ControlFrames::frame(msg)).is_ok() {
                    let _ = t.control.flush(fd);
                }
            }
            None => {
                let _ = sys::send_nosignal(fd, &ControlFrames::frame(msg));
            }
        }
        Ok(true)
    }

    fn recv_control(&mut self) -> Result<Option<Vec<u8>>> {
        let fd = self.control.as_raw_fd();
        let pumped = match &mut self.tls {
            Some(t) => {
                // What `send_control` could not write yet goes out first.
                let _ = t.control.flush(fd);
                self.ctl.pump_with(|b| match t.control.recv(fd, b) {
                    Ok(Some(0)) => Ok(None),
                    Ok(Some(n)) => Ok(Some(n)),
                    Ok(None) => Ok(Some(0)),
                    Err(e) => Err(io::Error::other(e.to_string())),
                })
            }
            None => self.ctl.pump(fd),
        };
        if let Err(e) = pumped {
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
        let now = self.tls.as_ref().is_some_and(|t| t.control.ready_now());
        Some(WaitHandle {
            fd: self.control.as_raw_fd(),
            events: if now {
                libc::POLLIN | libc::POLLOUT
            } else {
                libc::POLLIN
            },
            doorbell: false,
        })
    }

    fn wait_handles(&self, lane: usize, dir: Direction, out: &mut Vec<WaitHandle>) {
        // Bytes already inside rustls (decrypted, or records half written) make
        // progress without the socket's readiness: POLLOUT then wakes the poll at once
        // (an idle socket is writable) and the next call moves them (`tls`).
        let now = self.tls.as_ref().is_some_and(|t| t.lanes[lane].ready_now());
        out.push(WaitHandle {
            fd: self.socks[lane].as_raw_fd(),
            events: match dir {
                Direction::Send => libc::POLLOUT,
                Direction::Recv if now => libc::POLLIN | libc::POLLOUT,
                Direction::Recv => libc::POLLIN,
            },
            doorbell: false,
        });
    }

    fn class(&self) -> LinkClass {
        LinkClass::Tcp
    }
}
