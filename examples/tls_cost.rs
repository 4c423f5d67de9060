//! CPU cost of TLS 1.3 on a link, in ns per byte: one rustls (ring) client and
//! server in this process, the client encrypting 16 KiB records of a buffer and the
//! server decrypting them, the same provider and protocol as `MIXCCL_TLS` uses.
//! `mixccl-sim` charges this figure to links that TLS encrypts (`sim::net`).
//!
//!     cargo run --release --example tls_cost [MiB]
//!
//! Prints the suite and the ns/byte of encryption, decryption and both.

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() {
    let mib: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(512);
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["mixccl".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let certs = vec![cert.der().clone()];
    let pkey = PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap();
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let server = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, pkey)
        .unwrap();
    let mut c =
        ClientConnection::new(Arc::new(client), ServerName::try_from("mixccl").unwrap()).unwrap();
    let mut s = ServerConnection::new(Arc::new(server)).unwrap();
    let mut wire = Vec::new();
    while c.is_handshaking() || s.is_handshaking() {
        wire.clear();
        c.write_tls(&mut wire).unwrap();
        s.read_tls(&mut &wire[..]).unwrap();
        s.process_new_packets().unwrap();
        wire.clear();
        s.write_tls(&mut wire).unwrap();
        c.read_tls(&mut &wire[..]).unwrap();
        c.process_new_packets().unwrap();
    }
    let suite = c.negotiated_cipher_suite().unwrap().suite();
    let data: Vec<u8> = (0..1usize << 20).map(|i| (i * 31) as u8).collect();
    let mut out = vec![0u8; 1 << 20];
    let (mut enc, mut dec) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..mib {
        let t = Instant::now();
        wire.clear();
        // rustls holds at most 64 KiB of records unsent (as in a link's `send`).
        for rec in data.chunks(32 << 10) {
            c.writer().write_all(rec).unwrap();
            while c.wants_write() {
                c.write_tls(&mut wire).unwrap();
            }
        }
        let t1 = Instant::now();
        let mut src = &wire[..];
        let mut got = 0;
        while got < out.len() {
            if !src.is_empty() {
                s.read_tls(&mut src).unwrap();
                s.process_new_packets().unwrap();
            }
            match s.reader().read(&mut out[got..]) {
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => assert!(!src.is_empty()),
                Err(e) => panic!("{e}"),
            }
        }
        let t2 = Instant::now();
        enc += t1 - t;
        dec += t2 - t1;
        assert!(out == data, "decrypted bytes differ");
    }
    let bytes = (mib << 20) as f64;
    let ns = |d: Duration| d.as_secs_f64() * 1e9 / bytes;
    println!(
        "{suite:?}: encrypt {:.3} ns/B, decrypt {:.3} ns/B, both {:.3} ns/B ({mib} MiB)",
        ns(enc),
        ns(dec),
        ns(enc + dec)
    );
}
