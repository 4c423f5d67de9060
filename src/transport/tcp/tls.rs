//! TLS 1.3 on TCP connections (rustls with the ring provider), with mutual
//! authentication: every rank presents `MIXCCL_TLS_CERT`/`MIXCCL_TLS_KEY` and admits
//! only certificates that `MIXCCL_TLS_CA` signed and that are in their validity
//! period. Names are not checked (ranks are reached by address and admitted by the
//! communicator token, which then travels inside TLS): the CA is the identity.
//!
//! Which links are encrypted is `MIXCCL_TLS` ([`TlsPolicy`], must agree): the
//! connecting (higher) rank starts TLS where the policy says so; the listening rank
//! tells a TLS ClientHello (first byte 0x16) from a plaintext hello (`MXDATA`) and
//! refuses a plaintext connection from a rank the policy encrypts, naming it.
//!
//! Nonblocking use ([`TlsStream`]): ciphertext moves between rustls and the socket
//! only in the link's calls (`send_some`, `recv_some`, the control calls), so the
//! fd-level wait handles stay true with two rules:
//! - receive: `recv` returns only once the caller's buffer is full or both rustls'
//!   decrypted plaintext and the socket are empty, so a caller that polls for
//!   POLLIN after `Ok(0)` cannot sleep on bytes already inside rustls; as a belt,
//!   [`TlsStream::ready_now`] tells `wait_handles` to add POLLOUT (ready at once)
//!   whenever plaintext is buffered;
//! - send: bytes count as sent only once their records are all in the socket; while
//!   a record is partly written `send` returns `Ok(0)` and the caller polls
//!   POLLOUT, which is then exactly the condition that lets it finish.

use crate::config::{Config, TlsPolicy};
use crate::error::{Error, Result};
use crate::sys;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    CertificateError, ClientConfig, ClientConnection, Connection, DigitallySignedStruct,
    RootCertStore, ServerConfig, ServerConnection, SignatureScheme,
};
use std::io::{self, Read, Write};
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::Instant;

/// The first byte of a TLS handshake record (a ClientHello starts with it).
pub(crate) const TLS_HANDSHAKE_BYTE: u8 = 0x16;

/// Plaintext accepted into rustls per `send` call: four full records.
const SEND_CHUNK: usize = 4 * 16384;

/// The ack the listening rank sends inside TLS once it admitted a connection's
/// hello, so the connecting rank learns of a refused certificate (TLS 1.3 checks the
/// client's certificate after the client has finished its handshake) before init ends.
pub(crate) const ADMITTED: u8 = 0xA5;

/// The name the client asks for; certificates are not checked against it.
const SERVER_NAME: &str = "mixccl";

/// The certificates and keys of one rank, ready to start connections.
#[derive(Debug)]
pub(crate) struct TlsContext {
    client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_file(var: &str, path: Option<&std::path::Path>) -> Result<Vec<u8>> {
    let path =
        path.ok_or_else(|| Error::invalid(format!("MIXCCL_TLS is on but {var} is unset")))?;
    std::fs::read(path).map_err(|e| Error::io(format!("reading {var}={}", path.display()), e))
}

impl TlsContext {
    /// The context `config` asks for: `None` when `MIXCCL_TLS=off`; an error naming
    /// the variable when a file is missing or unreadable or the key does not fit.
    pub(crate) fn from_config(config: &Config) -> Result<Option<Arc<TlsContext>>> {
        if config.tls == TlsPolicy::Off {
            return Ok(None);
        }
        let cert = read_file("MIXCCL_TLS_CERT", config.tls_cert.as_deref())?;
        let key = read_file("MIXCCL_TLS_KEY", config.tls_key.as_deref())?;
        let ca = read_file("MIXCCL_TLS_CA", config.tls_ca.as_deref())?;
        TlsContext::from_pem(&cert, &key, &ca).map(|c| Some(Arc::new(c)))
    }

    /// A context from PEM text: certificate chain, private key, CA certificate(s).
    pub(crate) fn from_pem(cert: &[u8], key: &[u8], ca: &[u8]) -> Result<TlsContext> {
        let bad =
            |what: &str, e: &dyn std::fmt::Display| Error::invalid(format!("TLS: {what}: {e}"));
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| bad("MIXCCL_TLS_CERT is not PEM certificates", &e))?;
        if certs.is_empty() {
            return Err(Error::invalid("TLS: MIXCCL_TLS_CERT holds no certificate"));
        }
        let key = PrivateKeyDer::from_pem_slice(key)
            .map_err(|e| bad("MIXCCL_TLS_KEY holds no PEM private key", &e))?;
        let mut roots = RootCertStore::empty();
        let mut n = 0;
        for c in CertificateDer::pem_slice_iter(ca) {
            let c = c.map_err(|e| bad("MIXCCL_TLS_CA is not PEM certificates", &e))?;
            roots
                .add(c)
                .map_err(|e| bad("MIXCCL_TLS_CA holds an unusable certificate", &e))?;
            n += 1;
        }
        if n == 0 {
            return Err(Error::invalid("TLS: MIXCCL_TLS_CA holds no certificate"));
        }
        let roots = Arc::new(roots);
        let tls13 = &[&rustls::version::TLS13];
        let server_verifier =
            WebPkiServerVerifier::builder_with_provider(roots.clone(), provider())
                .build()
                .map_err(|e| bad("MIXCCL_TLS_CA", &e))?;
        let client = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(tls13)
            .map_err(|e| bad("TLS 1.3", &e))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(SignedByCa(server_verifier)))
            .with_client_auth_cert(certs.clone(), key.clone_key())
            .map_err(|e| bad("MIXCCL_TLS_KEY does not fit MIXCCL_TLS_CERT", &e))?;
        let client_verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
            .build()
            .map_err(|e| bad("MIXCCL_TLS_CA", &e))?;
        let mut server = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(tls13)
            .map_err(|e| bad("TLS 1.3", &e))?
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(certs, key)
            .map_err(|e| bad("MIXCCL_TLS_KEY does not fit MIXCCL_TLS_CERT", &e))?;
        // Every connection is new (no resumption): tickets would be bytes for nothing.
        server.send_tls13_tickets = 0;
        Ok(TlsContext {
            client: Arc::new(client),
            server: Arc::new(server),
        })
    }

    /// A client (connecting side) session.
    pub(crate) fn client(&self) -> Result<Connection> {
        let name = ServerName::try_from(SERVER_NAME).expect("a valid DNS name");
        ClientConnection::new(self.client.clone(), name)
            .map(Connection::from)
            .map_err(|e| Error::Internal(format!("starting a TLS client: {e}")))
    }

    /// A server (listening side) session.
    pub(crate) fn server(&self) -> Result<Connection> {
        ServerConnection::new(self.server.clone())
            .map(Connection::from)
            .map_err(|e| Error::Internal(format!("starting a TLS server: {e}")))
    }
}

/// Admits a server certificate that the CA signed and that is valid now, whatever
/// names it holds (the webpki verifier checks the chain and the dates first, the
/// name last; only a name mismatch is forgiven).
#[derive(Debug)]
struct SignedByCa(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for SignedByCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            r => r,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// Which peers' links are encrypted under `policy`: `same_host[p]` and `pod[p]`
/// (the pod of each rank, `None` without a pod model: every host its own pod).
pub(crate) fn encrypted_peers(
    policy: TlsPolicy,
    rank: usize,
    same_host: &[bool],
    pod: Option<&[usize]>,
) -> Vec<bool> {
    (0..same_host.len())
        .map(|p| {
            p != rank
                && match policy {
                    TlsPolicy::Off => false,
                    TlsPolicy::All => true,
                    TlsPolicy::CrossHost => !same_host[p],
                    TlsPolicy::CrossPod => match pod {
                        Some(pod) => pod[p] != pod[rank],
                        None => !same_host[p],
                    },
                }
        })
        .collect()
}

/// A socket descriptor as `Read`/`Write` for rustls, never blocking (would-block
/// is `ErrorKind::WouldBlock`) and never raising SIGPIPE.
struct Fd(RawFd);

impl Read for Fd {
    fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
        match sys::recv_nowait(self.0, b)? {
            Some(n) => Ok(n),
            None => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl Write for Fd {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        match sys::send_nosignal(self.0, b)? {
            0 if !b.is_empty() => Err(io::ErrorKind::WouldBlock.into()),
            n => Ok(n),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Why a TLS stream failed: the socket, or the protocol (bad certificate, alert).
#[derive(Debug)]
pub(crate) enum TlsFail {
    /// The socket failed or closed.
    Io(io::Error),
    /// rustls refused what it received, or the peer sent an alert.
    Tls(rustls::Error),
}

impl std::fmt::Display for TlsFail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TlsFail::Io(e) => write!(f, "{e}"),
            TlsFail::Tls(e) => write!(f, "TLS: {e}"),
        }
    }
}

impl From<io::Error> for TlsFail {
    fn from(e: io::Error) -> TlsFail {
        TlsFail::Io(e)
    }
}

/// One TLS session over a nonblocking socket, driven by the link's calls.
pub(crate) struct TlsStream {
    conn: Connection,
    /// Plaintext bytes encrypted into rustls but not yet reported to the caller
    /// (their records are not all in the socket yet).
    owed: usize,
    /// The peer closed the TCP stream.
    eof: bool,
    /// The last `recv` filled its buffer and left decrypted bytes inside rustls.
    full: bool,
}

impl TlsStream {
    /// A stream over `conn` (handshake done or not).
    pub(crate) fn new(conn: Connection) -> TlsStream {
        TlsStream {
            conn,
            owed: 0,
            eof: false,
            full: false,
        }
    }

    /// Writes buffered records to `fd` until done or the socket is full.
    pub(crate) fn flush(&mut self, fd: RawFd) -> std::result::Result<(), TlsFail> {
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut Fd(fd)) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Reads what the socket holds into rustls and decrypts it: `Ok(false)` when the
    /// socket had nothing (or only part of a record).
    fn pull(&mut self, fd: RawFd) -> std::result::Result<bool, TlsFail> {
        if self.eof {
            return Ok(false);
        }
        let got = match self.conn.read_tls(&mut Fd(fd)) {
            Ok(0) => {
                self.eof = true;
                // Decrypt what arrived before the close (a close_notify or an alert).
                self.conn.process_new_packets().map_err(TlsFail::Tls)?;
                return Ok(false);
            }
            Ok(_) => true,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
            Err(e) => return Err(e.into()),
        };
        let state = self.conn.process_new_packets();
        // Alerts and key updates rustls queued go out now, errors included.
        let _ = self.flush(fd);
        state.map_err(TlsFail::Tls)?;
        Ok(got)
    }

    /// Encrypts a prefix of the concatenation of `bufs` and writes it to `fd`; the
    /// count is reported only once all its records are in the socket (`Ok(0)`: poll
    /// for POLLOUT and call again with the same bytes).
    pub(crate) fn send(
        &mut self,
        fd: RawFd,
        bufs: &[&[u8]],
    ) -> std::result::Result<usize, TlsFail> {
        self.flush(fd)?;
        if self.conn.wants_write() {
            return Ok(0);
        }
        if self.owed > 0 {
            // The caller passes the bytes it was told were not sent yet: the first
            // `owed` of them are those already encrypted.
            debug_assert!(bufs.iter().map(|b| b.len()).sum::<usize>() >= self.owed);
            return Ok(std::mem::take(&mut self.owed));
        }
        let mut n = 0;
        for b in bufs {
            let take = b.len().min(SEND_CHUNK - n);
            if take == 0 {
                continue;
            }
            let k = self.conn.writer().write(&b[..take])?;
            n += k;
            if k < take || n == SEND_CHUNK {
                break;
            }
        }
        self.flush(fd)?;
        if self.conn.wants_write() {
            self.owed = n;
            return Ok(0);
        }
        Ok(n)
    }

    /// Reads decrypted bytes into `buf`: returns once `buf` is full or nothing more
    /// is buffered in rustls or readable on the socket. `Ok(None)`: the stream ended
    /// (close_notify or EOF) with nothing left.
    pub(crate) fn recv(
        &mut self,
        fd: RawFd,
        buf: &mut [u8],
    ) -> std::result::Result<Option<usize>, TlsFail> {
        let mut n = 0;
        self.full = false;
        loop {
            match self.conn.reader().read(&mut buf[n..]) {
                Ok(0) if n < buf.len() => {
                    // A clean close_notify.
                    return Ok((n > 0).then_some(n));
                }
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    return Ok((n > 0).then_some(n));
                }
                Err(e) => return Err(e.into()),
            }
            if n == buf.len() {
                // Decrypted bytes left over wake the next poll at once (`ready_now`).
                self.full = self
                    .conn
                    .process_new_packets()
                    .map_or(true, |s| s.plaintext_bytes_to_read() > 0);
                return Ok(Some(n));
            }
            if self.eof {
                return Ok((n > 0).then_some(n));
            }
            if !self.pull(fd)? {
                if self.eof {
                    continue;
                }
                return Ok(Some(n));
            }
        }
    }

    /// Decrypted bytes or records wait inside rustls: the next call makes progress
    /// without the socket becoming readable.
    pub(crate) fn ready_now(&self) -> bool {
        self.owed > 0 || self.conn.wants_write() || self.full
    }

    /// The handshake is still running.
    pub(crate) fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Advances the handshake by what the socket holds: `Ok(true)` when it is done
    /// and everything rustls queued is written.
    pub(crate) fn handshake_step(&mut self, fd: RawFd) -> std::result::Result<bool, TlsFail> {
        self.flush(fd)?;
        if self.conn.is_handshaking() {
            self.pull(fd)?;
            self.flush(fd)?;
            if self.eof && self.conn.is_handshaking() {
                return Err(TlsFail::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed during the TLS handshake",
                )));
            }
        }
        Ok(!self.conn.is_handshaking() && !self.conn.wants_write())
    }

    /// Queues `bytes` for sending (a hello or an ack; written by `flush`).
    pub(crate) fn queue(&mut self, bytes: &[u8]) -> std::result::Result<(), TlsFail> {
        self.conn.writer().write_all(bytes)?;
        Ok(())
    }

    /// Feeds bytes already read from the socket (before TLS was recognised).
    pub(crate) fn feed(&mut self, mut bytes: &[u8]) -> std::result::Result<(), TlsFail> {
        while !bytes.is_empty() {
            self.conn.read_tls(&mut bytes)?;
        }
        self.conn.process_new_packets().map_err(TlsFail::Tls)?;
        Ok(())
    }

    /// The events to poll while the stream waits on the socket.
    pub(crate) fn events(&self) -> i16 {
        if self.conn.wants_write() {
            libc::POLLIN | libc::POLLOUT
        } else {
            libc::POLLIN
        }
    }
}

/// Drives `s` over `fd` until its handshake is done, `ack` extra plaintext bytes
/// arrive into `got` (0: none awaited), or `deadline` passes; `what` names the peer
/// in errors.
pub(crate) fn drive_blocking(
    s: &mut TlsStream,
    fd: RawFd,
    got: &mut [u8],
    deadline: Instant,
    what: &str,
) -> Result<()> {
    let fail = |e: TlsFail| Error::Bootstrap(format!("TLS with {what}: {e}"));
    let start = Instant::now();
    let mut have = 0;
    loop {
        let done = s.handshake_step(fd).map_err(fail)?;
        if done && have < got.len() {
            match s.recv(fd, &mut got[have..]).map_err(fail)? {
                Some(k) => have += k,
                None => {
                    return Err(Error::Bootstrap(format!(
                        "TLS with {what}: the peer closed the connection after the handshake \
                         (it refused this rank's certificate or hello; see its log)"
                    )))
                }
            }
        }
        if done && have == got.len() {
            return Ok(());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::Timeout {
                op: format!(
                    "init: TLS handshake with {what} ({})",
                    if s.is_handshaking() {
                        "handshake unfinished: does the peer run MIXCCL_TLS?"
                    } else {
                        "no answer after the handshake"
                    }
                ),
                waiting_for: vec![],
                after: start.elapsed(),
            });
        }
        let mut fds = [sys::pollfd(fd, s.events())];
        sys::poll(&mut fds, left.min(std::time::Duration::from_millis(100)))
            .map_err(|e| Error::io(format!("polling the TLS connection to {what}"), e))?;
    }
}

/// The connecting side of one encrypted socket: the handshake, then `hello` inside
/// TLS, then the listener's [`ADMITTED`]; fails naming `what` (the peer) and the TLS
/// reason, or at `deadline`.
pub(crate) fn connect(
    ctx: &TlsContext,
    s: &std::net::TcpStream,
    hello: &[u8],
    deadline: Instant,
    what: &str,
) -> Result<TlsStream> {
    use std::os::fd::AsRawFd;
    s.set_nonblocking(true)
        .map_err(|e| Error::io(format!("configuring the socket to {what}"), e))?;
    let mut t = TlsStream::new(ctx.client()?);
    t.queue(hello)
        .map_err(|e| Error::Bootstrap(format!("TLS with {what}: {e}")))?;
    let mut ack = [0u8; 1];
    drive_blocking(&mut t, s.as_raw_fd(), &mut ack, deadline, what)?;
    if ack[0] != ADMITTED {
        return Err(Error::Bootstrap(format!(
            "TLS with {what}: unexpected answer {:#04x} to the hello",
            ack[0]
        )));
    }
    Ok(t)
}

/// Whether `ip` is this host's (loopback or an interface's address): the bootstrap
/// encrypts its connections under `cross-host` and `cross-pod` only when the other
/// end is not (the root's pod is not known before the table).
pub(crate) fn is_local(ip: std::net::IpAddr) -> bool {
    ip.is_loopback()
        || sys::interfaces()
            .map(|ifs| ifs.iter().any(|i| i.ip == ip))
            .unwrap_or(false)
}

/// Whether a bootstrap connection to or from `peer` carries TLS under `policy`.
pub(crate) fn bootstrap_encrypts(policy: TlsPolicy, peer: std::net::IpAddr) -> bool {
    match policy {
        TlsPolicy::Off => false,
        TlsPolicy::All => true,
        TlsPolicy::CrossHost | TlsPolicy::CrossPod => !is_local(peer),
    }
}

fn waited(s: &TlsStream, fd: RawFd, deadline: Instant) -> io::Result<()> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(io::ErrorKind::TimedOut.into());
    }
    let mut fds = [sys::pollfd(fd, s.events())];
    sys::poll(&mut fds, left.min(std::time::Duration::from_millis(100)))?;
    Ok(())
}

fn io_err(e: TlsFail) -> io::Error {
    match e {
        TlsFail::Io(e) => e,
        TlsFail::Tls(e) => io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {e}")),
    }
}

/// Writes all of `bytes` through `t` on socket `fd` by `deadline` (bootstrap).
pub(crate) fn write_all_by(
    t: &mut TlsStream,
    fd: RawFd,
    mut bytes: &[u8],
    deadline: Instant,
) -> io::Result<()> {
    while !bytes.is_empty() {
        let n = t.send(fd, &[bytes]).map_err(io_err)?;
        bytes = &bytes[n..];
        if n == 0 {
            waited(t, fd, deadline)?;
        }
    }
    Ok(())
}

/// Reads exactly `buf.len()` bytes through `t` on socket `fd` by `deadline`
/// (bootstrap); the end of the stream is `UnexpectedEof`.
pub(crate) fn read_exact_by(
    t: &mut TlsStream,
    fd: RawFd,
    buf: &mut [u8],
    deadline: Instant,
) -> io::Result<()> {
    let mut got = 0;
    while got < buf.len() {
        match t.recv(fd, &mut buf[got..]).map_err(io_err)? {
            None => return Err(io::ErrorKind::UnexpectedEof.into()),
            Some(0) => waited(t, fd, deadline)?,
            Some(n) => got += n,
        }
    }
    Ok(())
}

/// The client side of a bootstrap connection: the handshake on `s` (made
/// non-blocking) by `deadline`; `what` names the other end in errors.
pub(crate) fn client_handshake(
    ctx: &TlsContext,
    s: &std::net::TcpStream,
    deadline: Instant,
    what: &str,
) -> Result<TlsStream> {
    use std::os::fd::AsRawFd;
    s.set_nonblocking(true)
        .map_err(|e| Error::io(format!("configuring the socket to {what}"), e))?;
    let mut t = TlsStream::new(ctx.client()?);
    drive_blocking(&mut t, s.as_raw_fd(), &mut [], deadline, what)?;
    Ok(t)
}

#[cfg(test)]
#[path = "tls_tests.rs"]
pub(crate) mod tests;
