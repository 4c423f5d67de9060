//! TLS on the mesh: certificates made here with rcgen (a CA, ranks it signed, a
//! stranger CA's rank, an expired rank, a key that is not the certificate's), two
//! ranks over loopback, and a tap that records every byte between them.

use super::*;
use crate::transport::tcp::{connect_mesh, MeshSpec, TcpLink};
use crate::transport::Link;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// PEM text of one rank's files.
#[derive(Clone)]
pub(crate) struct Pem {
    pub cert: String,
    pub key: String,
    pub ca: String,
}

impl Pem {
    pub(crate) fn context(&self) -> crate::Result<TlsContext> {
        TlsContext::from_pem(
            self.cert.as_bytes(),
            self.key.as_bytes(),
            self.ca.as_bytes(),
        )
    }
}

fn ca(name: &str) -> (Issuer<'static, KeyPair>, String) {
    let key = KeyPair::generate().expect("CA key");
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name
        .push(rcgen::DnType::CommonName, name.to_string());
    let cert = p.self_signed(&key).expect("CA certificate");
    (Issuer::new(p, key), cert.pem())
}

/// A rank's certificate signed by `issuer`, valid from `from` to `to` (years).
fn leaf(issuer: &Issuer<'static, KeyPair>, from: i32, to: i32) -> (String, String) {
    let key = KeyPair::generate().expect("rank key");
    let mut p = CertificateParams::new(vec!["rank.mixccl.test".to_string()]).expect("params");
    p.not_before = rcgen::date_time_ymd(from, 1, 1);
    p.not_after = rcgen::date_time_ymd(to, 1, 1);
    let cert = p.signed_by(&key, issuer).expect("rank certificate");
    (cert.pem(), key.serialize_pem())
}

/// Files for good ranks and for each kind of bad one.
pub(crate) struct Certs {
    pub good: [Pem; 2],
    pub stranger: Pem,
    pub expired: Pem,
    pub wrong_key: Pem,
}

pub(crate) fn certs() -> Certs {
    let (issuer, ca_pem) = ca("mixccl test CA");
    let (other, _) = ca("someone else's CA");
    let pem = |(cert, key): (String, String)| Pem {
        cert,
        key,
        ca: ca_pem.clone(),
    };
    let good = [
        pem(leaf(&issuer, 2020, 2200)),
        pem(leaf(&issuer, 2020, 2200)),
    ];
    let mut wrong_key = good[1].clone();
    wrong_key.key = KeyPair::generate().expect("key").serialize_pem();
    Certs {
        stranger: pem(leaf(&other, 2020, 2200)),
        expired: pem(leaf(&issuer, 2001, 2002)),
        wrong_key,
        good,
    }
}

const TOKEN: [u8; 16] = [0x3c; 16];

/// Both ranks' meshes: rank `r` uses `ctx[r]` and encrypts where `enc[r]` says,
/// reaching rank 0 at `via` (a tap) when given.
fn mesh_pair(
    ctx: [Option<&TlsContext>; 2],
    enc: [bool; 2],
    via: Option<&dyn Fn(SocketAddr) -> SocketAddr>,
    wait: Duration,
) -> [crate::Result<Vec<Option<TcpLink>>>; 2] {
    let listeners = [
        TcpListener::bind("127.0.0.1:0").expect("listener"),
        TcpListener::bind("127.0.0.1:0").expect("listener"),
    ];
    let mut addrs: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
    if let Some(via) = via {
        addrs[0] = via(addrs[0]);
    }
    let run = |rank: usize| {
        let encrypt = [enc[rank] && rank != 0, enc[rank] && rank != 1];
        connect_mesh(
            &MeshSpec {
                rank,
                addrs: &addrs,
                use_tcp: &[rank != 0, rank != 1],
                token: TOKEN,
                nsocks: 2,
                socket_buffer: 64 << 10,
                same_host: &[true, true],
                tls: ctx[rank],
                encrypt: &encrypt,
                deadline: Instant::now() + wait,
            },
            &listeners[rank],
        )
    };
    std::thread::scope(|s| {
        let one = s.spawn(|| run(1));
        let zero = run(0);
        [zero, one.join().expect("rank 1 panicked")]
    })
}

/// Sends `data` from `from` to `to` on `lane` and checks what arrives.
fn one_way(from: &mut TcpLink, to: &mut TcpLink, lane: usize, data: &[u8]) {
    let mut got = vec![0u8; data.len()];
    let (mut sent, mut recvd) = (0, 0);
    let start = Instant::now();
    while recvd < data.len() {
        assert!(start.elapsed() < Duration::from_secs(60), "exchange stuck");
        if sent < data.len() {
            sent += from.send_some(lane, &data[sent..]).expect("send");
        }
        recvd += to.recv_some(lane, &mut got[recvd..]).expect("recv");
    }
    assert!(got == data, "lane {lane}: bytes differ after TLS");
}

/// Sends `data` both ways on every lane of the pair and checks what arrives.
fn exchange(a: &mut TcpLink, b: &mut TcpLink, data: &[u8]) {
    for lane in 0..a.lanes() {
        one_way(a, b, lane, data);
        one_way(b, a, lane, data);
    }
}

#[test]
fn encrypted_links_carry_bytes_and_control() {
    let c = certs();
    let (c0, c1) = (c.good[0].context().unwrap(), c.good[1].context().unwrap());
    let [zero, one] = mesh_pair(
        [Some(&c0), Some(&c1)],
        [true, true],
        None,
        Duration::from_secs(20),
    );
    let (mut a, mut b) = (
        zero.unwrap()[1].take().unwrap(),
        one.unwrap()[0].take().unwrap(),
    );
    assert!(a.encrypted() && b.encrypted());
    let data: Vec<u8> = (0..(3 << 20) + 5)
        .map(|i: u32| (i * 7 + i / 251) as u8)
        .collect();
    exchange(&mut a, &mut b, &data);
    a.send_control(b"over tls").unwrap();
    let start = Instant::now();
    let msg = loop {
        if let Some(m) = b.recv_control().unwrap() {
            break m;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "control lost");
        std::thread::sleep(Duration::from_millis(1));
    };
    assert_eq!(msg, b"over tls");
    drop(a);
    // A goodbye through TLS: a normal close, not a death.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(2) {
        assert!(b.recv_control().unwrap().is_none());
    }
}

/// The error of the side that failed first and the other side's.
fn failure(ctx: [Option<&TlsContext>; 2], enc: [bool; 2]) -> [String; 2] {
    let [zero, one] = mesh_pair(ctx, enc, None, Duration::from_secs(3));
    [zero, one].map(|r| match r {
        Ok(_) => "ok".to_string(),
        Err(e) => e.to_string(),
    })
}

#[test]
fn a_certificate_the_ca_did_not_sign_fails_both_ends() {
    let c = certs();
    let good = c.good[0].context().unwrap();
    let stranger = c.stranger.context().unwrap();
    // The stranger connects (rank 1) and listens (rank 0).
    let [zero, one] = failure([Some(&good), Some(&stranger)], [true, true]);
    assert!(
        zero.contains("refused") && zero.contains("rank 1"),
        "{zero}"
    );
    assert!(zero.contains("TLS"), "{zero}");
    assert!(one.contains("rank 0") && one.contains("TLS"), "{one}");
    assert!(
        one.contains("UnknownIssuer") || one.contains("UnknownCA"),
        "{one}"
    );
    let [zero, one] = failure([Some(&stranger), Some(&good)], [true, true]);
    assert!(zero.contains("rank 1") && zero.contains("TLS"), "{zero}");
    assert!(
        one.contains("rank 0") && one.contains("UnknownIssuer"),
        "{one}"
    );
}

#[test]
fn an_expired_certificate_fails_both_ends() {
    let c = certs();
    let good = c.good[0].context().unwrap();
    let expired = c.expired.context().unwrap();
    let [zero, one] = failure([Some(&good), Some(&expired)], [true, true]);
    assert!(
        zero.contains("rank 1") && zero.to_lowercase().contains("expired"),
        "{zero}"
    );
    assert!(one.contains("rank 0") && one.contains("TLS"), "{one}");
    let [zero, one] = failure([Some(&expired), Some(&good)], [true, true]);
    assert!(zero.contains("rank 1") && zero.contains("TLS"), "{zero}");
    assert!(
        one.contains("rank 0") && one.to_lowercase().contains("expired"),
        "{one}"
    );
}

#[test]
fn a_key_that_is_not_the_certificates_is_refused() {
    let c = certs();
    match c.wrong_key.context() {
        // rustls compares the key with the certificate: the rank fails at once.
        Err(e) => assert!(e.to_string().contains("MIXCCL_TLS_KEY"), "{e}"),
        // Otherwise the peer refuses the handshake's signature.
        Ok(wrong) => {
            let good = c.good[0].context().unwrap();
            let [zero, one] = failure([Some(&good), Some(&wrong)], [true, true]);
            assert!(zero.contains("rank 1") && zero.contains("TLS"), "{zero}");
            assert!(one.contains("rank 0") && one.contains("TLS"), "{one}");
        }
    }
}

#[test]
fn a_peer_without_tls_is_refused_by_name() {
    let c = certs();
    let good = c.good[0].context().unwrap();
    // Rank 1 sends a plaintext hello where rank 0 encrypts.
    let [zero, _] = failure([Some(&good), None], [true, false]);
    assert!(zero.contains("rank 1 connected without TLS"), "{zero}");
    // Rank 1 opens TLS where rank 0 has it off: both ends say so.
    let [zero, one] = failure([None, Some(&good)], [false, true]);
    assert!(zero.contains("MIXCCL_TLS is off"), "{zero}");
    assert!(one.contains("rank 0") && one.contains("TLS"), "{one}");
}

/// A TCP relay from a new listener to `to`, recording every byte both ways, for
/// `conns` connections.
fn tap(to: SocketAddr, conns: usize, seen: Arc<Mutex<Vec<u8>>>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let at = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for _ in 0..conns {
            let Ok((a, _)) = l.accept() else { return };
            let Ok(b) = TcpStream::connect(to) else {
                return;
            };
            for (mut from, mut into) in [(a.try_clone().unwrap(), b.try_clone().unwrap()), (b, a)] {
                let seen = seen.clone();
                std::thread::spawn(move || {
                    use std::io::{Read, Write};
                    from.set_read_timeout(Some(Duration::from_secs(60)))
                        .unwrap();
                    let mut buf = vec![0u8; 1 << 16];
                    while let Ok(n) = from.read(&mut buf) {
                        if n == 0 || into.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        seen.lock().unwrap().extend_from_slice(&buf[..n]);
                    }
                    let _ = into.shutdown(std::net::Shutdown::Write);
                });
            }
        }
    });
    at
}

/// Relays the pair's connections through a tap, sends a marker both ways on every
/// lane, and returns whether the marker crossed the wire.
fn marker_on_the_wire(ctx: [Option<&TlsContext>; 2], enc: bool) -> bool {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let via = move |to: SocketAddr| tap(to, 3, s2.clone());
    let [zero, one] = mesh_pair(ctx, [enc, enc], Some(&via), Duration::from_secs(20));
    let (mut a, mut b) = (
        zero.unwrap()[1].take().unwrap(),
        one.unwrap()[0].take().unwrap(),
    );
    let marker = b"<<MIXCCL-PLAINTEXT-MARKER>>";
    let data: Vec<u8> = marker.iter().copied().cycle().take(256 << 10).collect();
    exchange(&mut a, &mut b, &data);
    a.send_control(marker).unwrap();
    b.send_control(marker).unwrap();
    drop((a, b));
    std::thread::sleep(Duration::from_millis(200));
    let seen = seen.lock().unwrap();
    assert!(
        seen.len() > 4 * data.len(),
        "the tap saw {} bytes",
        seen.len()
    );
    seen.windows(marker.len()).any(|w| w == marker)
}

#[test]
fn no_plaintext_crosses_an_encrypted_link() {
    let c = certs();
    let (c0, c1) = (c.good[0].context().unwrap(), c.good[1].context().unwrap());
    // The tap does see a plaintext link's marker (so its silence below means something).
    assert!(marker_on_the_wire([None, None], false));
    assert!(!marker_on_the_wire([Some(&c0), Some(&c1)], true));
}

#[test]
fn policy_picks_the_links() {
    use TlsPolicy::*;
    let same = [true, true, false, false];
    let pods = [0, 0, 0, 1];
    assert_eq!(encrypted_peers(Off, 0, &same, None), [false; 4]);
    assert_eq!(
        encrypted_peers(All, 0, &same, None),
        [false, true, true, true]
    );
    assert_eq!(
        encrypted_peers(CrossHost, 0, &same, None),
        [false, false, true, true]
    );
    assert_eq!(
        encrypted_peers(CrossPod, 0, &same, Some(&pods)),
        [false, false, false, true]
    );
    assert_eq!(
        encrypted_peers(CrossPod, 0, &same, None),
        [false, false, true, true]
    );
}
