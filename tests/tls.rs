//! TLS through the public API: ranks joined by `Communicator::init` with
//! `MIXCCL_TLS=all` (shared memory off, so every link is TCP and encrypted) compute
//! right, a rank whose policy differs makes every rank fail naming the setting, and a
//! certificate of another CA fails init on both ranks (the bootstrap carries TLS too).
//! The failure modes of the handshake itself (stranger CA, expired certificate,
//! wrong key, plaintext peer) and the byte tap are tested at the mesh
//! (`cargo test --lib tls`).

use mixccl::{Communicator, Config, ReduceOp, TlsPolicy, UniqueId};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Writes a CA and `n` rank certificates it signed into `dir`; returns each rank's
/// (cert, key) paths and the CA's path.
fn certificates(dir: &Path, n: usize) -> (Vec<(PathBuf, PathBuf)>, PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca, ca_key);
    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, ca_pem).unwrap();
    let ranks = (0..n)
        .map(|r| {
            let key = KeyPair::generate().unwrap();
            let cert = CertificateParams::new(vec![format!("rank{r}")])
                .unwrap()
                .signed_by(&key, &issuer)
                .unwrap();
            let (c, k) = (dir.join(format!("r{r}.pem")), dir.join(format!("r{r}.key")));
            std::fs::write(&c, cert.pem()).unwrap();
            std::fs::write(&k, key.serialize_pem()).unwrap();
            (c, k)
        })
        .collect();
    (ranks, ca_path)
}

fn tls_config(files: &[(PathBuf, PathBuf)], ca: &Path, rank: usize) -> Config {
    Config {
        timeout: Duration::from_secs(20),
        shm_disable: true,
        tls: TlsPolicy::All,
        tls_cert: Some(files[rank].0.clone()),
        tls_key: Some(files[rank].1.clone()),
        tls_ca: Some(ca.to_path_buf()),
        ..Config::default()
    }
}

fn root(config: &Config) -> UniqueId {
    let lo = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
    UniqueId::bind_with(lo, config).expect("bind the bootstrap root")
}

/// Inits one rank per config on `id` at once; each rank's error text (or "init
/// succeeded").
fn init_errors(configs: &[Config], id: &UniqueId) -> Vec<String> {
    std::thread::scope(|s| {
        let hs: Vec<_> = configs
            .iter()
            .enumerate()
            .map(|(rank, config)| {
                let config = config.clone();
                s.spawn(
                    move || match Communicator::init(rank, configs.len(), id, config) {
                        Ok(_) => "init succeeded".to_string(),
                        Err(e) => e.to_string(),
                    },
                )
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn ranks_over_tls_reduce_right() {
    let dir = std::env::temp_dir().join(format!("mixccl-tls-{}", std::process::id()));
    let (files, ca) = certificates(&dir, 3);
    let id = root(&tls_config(&files, &ca, 0));
    let count = (1 << 20) + 3;
    let results: Vec<Result<Vec<f32>, mixccl::Error>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..3)
            .map(|rank| {
                let (id, config) = (&id, tls_config(&files, &ca, rank));
                s.spawn(move || {
                    let mut comm = Communicator::init(rank, 3, id, config)?;
                    let send: Vec<f32> = (0..count).map(|i| (i % 97 + rank) as f32).collect();
                    let mut recv = vec![0f32; count];
                    comm.all_reduce(&send, &mut recv, ReduceOp::Sum)?;
                    Ok(recv)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let _ = std::fs::remove_dir_all(&dir);
    for (rank, r) in results.into_iter().enumerate() {
        let got = r.unwrap_or_else(|e| panic!("rank {rank}: {e}"));
        for (i, v) in got.iter().enumerate() {
            // Sum over ranks 0..3 of (i % 97 + rank), computed apart from the library.
            let want = (3 * (i % 97) + 3) as f32;
            assert_eq!(*v, want, "rank {rank} element {i}");
        }
    }
}

#[test]
fn a_rank_without_tls_fails_every_rank_by_name() {
    let dir = std::env::temp_dir().join(format!("mixccl-tls-off-{}", std::process::id()));
    let (files, ca) = certificates(&dir, 2);
    let mut configs = [tls_config(&files, &ca, 0), tls_config(&files, &ca, 1)];
    configs[1].tls = TlsPolicy::Off;
    for c in &mut configs {
        c.timeout = Duration::from_secs(5);
    }
    let id = root(&configs[0]);
    let errors = init_errors(&configs, &id);
    let _ = std::fs::remove_dir_all(&dir);
    for (rank, e) in errors.iter().enumerate() {
        assert!(e.contains("MIXCCL_TLS"), "rank {rank}: {e}");
    }
}

/// Rank 1's certificate is signed by another CA: its TLS handshake with the root
/// (rank 0) fails at init, rank 1 naming the TLS reason and rank 0 told by the
/// root's failure report, both within the timeout.
#[test]
fn a_certificate_of_another_ca_fails_init_on_both_ranks() {
    let dir = std::env::temp_dir().join(format!("mixccl-tls-ca-{}", std::process::id()));
    let (files, ca) = certificates(&dir.join("good"), 2);
    let (strangers, _) = certificates(&dir.join("other"), 2);
    let mut configs = [tls_config(&files, &ca, 0), tls_config(&strangers, &ca, 1)];
    for c in &mut configs {
        c.timeout = Duration::from_secs(4);
    }
    let id = root(&configs[0]);
    let start = std::time::Instant::now();
    let errors = init_errors(&configs, &id);
    let _ = std::fs::remove_dir_all(&dir);
    // The root gives up 4 s after the first hello; ranks allow it 5 s more to say so.
    assert!(
        start.elapsed() < Duration::from_secs(12),
        "{:?}",
        start.elapsed()
    );
    for (rank, e) in errors.iter().enumerate() {
        assert!(e.contains("TLS"), "rank {rank}: {e}");
    }
    assert!(
        errors[0].contains("[1]"),
        "rank 0 names rank 1: {}",
        errors[0]
    );
}

/// `init_scalable` through two roots, every connection under `MIXCCL_TLS=all` (the
/// ranks' hellos, and root 1's slice to root 0) reduces right; a root 1 whose policy
/// would send its slice in plaintext is refused by root 0, and its ranks say so.
#[test]
fn two_roots_over_tls_reduce_right_and_a_plaintext_root_is_refused() {
    let dir = std::env::temp_dir().join(format!("mixccl-tls-roots-{}", std::process::id()));
    let (files, ca) = certificates(&dir, 4);
    let ids = [
        root(&tls_config(&files, &ca, 0)),
        root(&tls_config(&files, &ca, 2)),
    ];
    let sums: Vec<Result<f32, String>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|rank| {
                let (ids, config) = (&ids, tls_config(&files, &ca, rank));
                s.spawn(move || {
                    let mut comm = Communicator::init_scalable(rank, 4, ids, config)
                        .map_err(|e| e.to_string())?;
                    let mut x = [rank as f32 + 1.0];
                    comm.all_reduce_in_place(&mut x, ReduceOp::Sum)
                        .map_err(|e| e.to_string())?;
                    Ok(x[0])
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(sums, vec![Ok(10.0); 4]);

    // Root 1 and its ranks under cross-host: on loopback that is plaintext.
    let plain = |rank: usize| Config {
        timeout: Duration::from_secs(3),
        tls: TlsPolicy::CrossHost,
        ..tls_config(&files, &ca, rank)
    };
    let strict = |rank: usize| Config {
        timeout: Duration::from_secs(3),
        ..tls_config(&files, &ca, rank)
    };
    let ids = [root(&strict(0)), root(&plain(2))];
    let errs: Vec<String> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|rank| {
                let config = if rank < 2 { strict(rank) } else { plain(rank) };
                let ids = &ids;
                s.spawn(
                    move || match Communicator::init_scalable(rank, 4, ids, config) {
                        Ok(_) => "init succeeded".to_string(),
                        Err(e) => e.to_string(),
                    },
                )
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let _ = std::fs::remove_dir_all(&dir);
    for (rank, e) in errs.iter().enumerate() {
        assert!(e.contains("without TLS"), "rank {rank}: {e}");
    }
}
