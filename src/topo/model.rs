//! The model every rank plans with: hosts, the ranks on each, and per host the
//! cost of a link inside it and of its network link, each as latency (alpha) and
//! bandwidth (beta). Built from the ranks' probes, refined by measurement, dumped
//! and loaded as JSON. It must be equal on all ranks; [`Topology::fingerprint`]
//! lets them check.

use super::probe::RankProbe;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// What carries a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkClass {
    /// Shared memory inside a host.
    Shm,
    /// TCP sockets.
    Tcp,
    /// RDMA (verbs).
    Rdma,
    /// The in-process transport of tests.
    Mem,
}

impl LinkClass {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            LinkClass::Shm => "shm",
            LinkClass::Tcp => "tcp",
            LinkClass::Rdma => "rdma",
            LinkClass::Mem => "mem",
        }
    }
}

/// The alpha-beta cost of one class of link.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LinkCost {
    /// The transport.
    pub class: LinkClass,
    /// Latency of one message in microseconds (alpha).
    pub alpha_us: f64,
    /// Bandwidth in GB/s (10^9 bytes per second; 1/beta).
    pub bw_gbs: f64,
    /// Whether the figures were measured at init (else taken from the probe or a file).
    #[serde(default)]
    pub measured: bool,
}

impl LinkCost {
    /// Seconds to move `bytes` in one message.
    pub fn time(&self, bytes: f64) -> f64 {
        self.alpha_us * 1e-6 + bytes / (self.bw_gbs * 1e9)
    }

    fn check(&self, what: &str) -> Result<()> {
        let ok = |x: f64| x.is_finite() && x > 0.0;
        if !ok(self.alpha_us) || !ok(self.bw_gbs) {
            return Err(Error::invalid(format!(
                "topology: {what} needs a positive alpha_us and bw_gbs (got {} us, {} GB/s)",
                self.alpha_us, self.bw_gbs
            )));
        }
        Ok(())
    }
}

/// Defaults before measurement: shared memory is a memory copy through a ring, TCP
/// runs at the NIC's line rate, RDMA at the port's rate.
pub(crate) const SHM_DEFAULT: LinkCost = LinkCost {
    class: LinkClass::Shm,
    alpha_us: 5.0,
    bw_gbs: 4.0,
    measured: false,
};
pub(crate) const MEM_DEFAULT: LinkCost = LinkCost {
    class: LinkClass::Mem,
    ..SHM_DEFAULT
};
const TCP_ALPHA_US: f64 = 40.0;
/// Assumed when a NIC does not report its speed (10 Gbit/s).
const TCP_DEFAULT_MBPS: u64 = 10_000;
const RDMA_ALPHA_US: f64 = 4.0;

/// One host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Host {
    /// Host identity.
    pub name: String,
    /// Its ranks, ascending.
    pub ranks: Vec<usize>,
    /// A link between two ranks of this host.
    pub intra: LinkCost,
    /// This host's network link (each direction); a link between two hosts costs the
    /// larger alpha and the smaller bandwidth of the two.
    pub net: LinkCost,
}

/// The whole communicator as the planner sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Topology {
    /// Format version (1).
    #[serde(default = "one")]
    pub version: u32,
    /// Every host; each rank is on exactly one.
    pub hosts: Vec<Host>,
    /// Per-rank probes (optional in a hand-written file).
    #[serde(default)]
    pub probes: Vec<RankProbe>,
    #[serde(skip)]
    host_of: Vec<usize>,
}

fn one() -> u32 {
    1
}

impl Topology {
    /// Checks a model and indexes its ranks: ranks `0..n` each on exactly one host,
    /// every cost positive.
    pub fn new(hosts: Vec<Host>, probes: Vec<RankProbe>) -> Result<Topology> {
        let mut t = Topology {
            version: 1,
            hosts,
            probes,
            host_of: Vec::new(),
        };
        t.index()?;
        Ok(t)
    }

    fn index(&mut self) -> Result<()> {
        if self.version != 1 {
            return Err(Error::invalid(format!(
                "topology: version {} is not supported (1)",
                self.version
            )));
        }
        let n: usize = self.hosts.iter().map(|h| h.ranks.len()).sum();
        if n == 0 || n > crate::bootstrap::MAX_RANKS {
            return Err(Error::invalid(format!("topology: {n} ranks")));
        }
        let mut host_of = vec![usize::MAX; n];
        for (i, h) in self.hosts.iter_mut().enumerate() {
            if h.ranks.is_empty() {
                return Err(Error::invalid(format!("topology: host {i} has no ranks")));
            }
            h.intra.check(&format!("host {i} intra"))?;
            h.net.check(&format!("host {i} net"))?;
            h.ranks.sort_unstable();
            for &r in &h.ranks {
                match host_of.get_mut(r) {
                    Some(slot) if *slot == usize::MAX => *slot = i,
                    Some(_) => {
                        return Err(Error::invalid(format!(
                            "topology: rank {r} is on two hosts"
                        )))
                    }
                    None => {
                        return Err(Error::invalid(format!(
                            "topology: rank {r} is out of range for {n} ranks"
                        )))
                    }
                }
            }
        }
        if !self.probes.is_empty() && self.probes.len() != n {
            return Err(Error::invalid(format!(
                "topology: {} probes for {n} ranks",
                self.probes.len()
            )));
        }
        self.host_of = host_of;
        Ok(())
    }

    /// `nranks` ranks on one host over `intra` (in-process communicators).
    pub fn single_host(nranks: usize, intra: LinkCost) -> Result<Topology> {
        Topology::new(
            vec![Host {
                name: "local".into(),
                ranks: (0..nranks).collect(),
                intra,
                net: intra,
            }],
            Vec::new(),
        )
    }

    /// The model implied by every rank's probe: ranks with equal host identity share a
    /// host (hosts in order of their lowest rank), shared memory inside a host unless
    /// `shm` is false, and RDMA or TCP between hosts at the probed speed of the
    /// slowest rank's interface on the host.
    pub fn from_probes(probes: Vec<RankProbe>, shm: bool) -> Result<Topology> {
        let mut hosts: Vec<Host> = Vec::new();
        for (r, p) in probes.iter().enumerate() {
            let net = match p.rdma_gbps() {
                Some(g) => LinkCost {
                    class: LinkClass::Rdma,
                    alpha_us: RDMA_ALPHA_US,
                    bw_gbs: g / 8.0,
                    measured: false,
                },
                None => LinkCost {
                    class: LinkClass::Tcp,
                    alpha_us: TCP_ALPHA_US,
                    bw_gbs: p.net_speed_mbps().unwrap_or(TCP_DEFAULT_MBPS) as f64 / 8e3,
                    measured: false,
                },
            };
            match hosts.iter_mut().find(|h| h.name == p.host) {
                Some(h) => {
                    h.ranks.push(r);
                    if net.bw_gbs < h.net.bw_gbs {
                        h.net = net;
                    }
                }
                None => {
                    // Without shared memory, ranks on one host talk TCP over loopback.
                    let intra = if shm {
                        SHM_DEFAULT
                    } else {
                        LinkCost {
                            class: LinkClass::Tcp,
                            alpha_us: TCP_ALPHA_US / 2.0,
                            bw_gbs: 2.0,
                            measured: false,
                        }
                    };
                    hosts.push(Host {
                        name: p.host.clone(),
                        ranks: vec![r],
                        intra,
                        net,
                    })
                }
            }
        }
        Topology::new(hosts, probes)
    }

    /// The model of the communicator left when the ranks in `excluded` are removed
    /// (`Communicator::shrink`): the others renumbered in order, emptied hosts dropped.
    pub fn without(&self, excluded: &[usize]) -> Result<Topology> {
        let survivors: Vec<usize> = (0..self.nranks())
            .filter(|r| !excluded.contains(r))
            .collect();
        let new_rank = |r: usize| survivors.iter().position(|&s| s == r);
        let hosts = self
            .hosts
            .iter()
            .filter_map(|h| {
                let ranks: Vec<usize> = h.ranks.iter().filter_map(|&r| new_rank(r)).collect();
                (!ranks.is_empty()).then(|| Host { ranks, ..h.clone() })
            })
            .collect();
        let probes = if self.probes.is_empty() {
            Vec::new()
        } else {
            survivors.iter().map(|&r| self.probes[r].clone()).collect()
        };
        Topology::new(hosts, probes)
    }

    /// Parses the JSON of [`Topology::to_json`] (or a hand-written file of that shape).
    pub fn from_json(text: &str) -> Result<Topology> {
        let mut t: Topology = serde_json::from_str(text)
            .map_err(|e| Error::invalid(format!("topology JSON: {e}")))?;
        t.index()?;
        Ok(t)
    }

    /// Loads a JSON file (`MIXCCL_TOPO_FILE`).
    pub fn load(path: &std::path::Path) -> Result<Topology> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("reading the topology file {}", path.display()), e))?;
        Topology::from_json(&text)
            .map_err(|e| Error::invalid(format!("MIXCCL_TOPO_FILE={}: {e}", path.display())))
    }

    /// Pretty JSON; [`Topology::from_json`] reads it back.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("the model is plain JSON values")
    }

    /// Number of ranks.
    pub fn nranks(&self) -> usize {
        self.host_of.len()
    }

    /// Host index of `rank`.
    pub fn host_of(&self, rank: usize) -> usize {
        self.host_of[rank]
    }

    /// Position of `rank` among its host's ranks.
    pub fn local_index(&self, rank: usize) -> usize {
        let h = &self.hosts[self.host_of[rank]];
        h.ranks.iter().position(|&r| r == rank).unwrap_or(0)
    }

    /// The cost of a message from `a` to `b`.
    pub fn link(&self, a: usize, b: usize) -> LinkCost {
        let (ha, hb) = (&self.hosts[self.host_of[a]], &self.hosts[self.host_of[b]]);
        if self.host_of[a] == self.host_of[b] {
            return ha.intra;
        }
        LinkCost {
            class: if ha.net.class == hb.net.class {
                ha.net.class
            } else {
                LinkClass::Tcp
            },
            alpha_us: ha.net.alpha_us.max(hb.net.alpha_us),
            bw_gbs: ha.net.bw_gbs.min(hb.net.bw_gbs),
            measured: ha.net.measured && hb.net.measured,
        }
    }

    /// A 64-bit FNV-1a hash of everything the planner reads (hosts, ranks, costs), so
    /// ranks can check that they plan with the same model.
    pub fn fingerprint(&self) -> u64 {
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        let mut eat = |bytes: &[u8]| {
            for b in bytes {
                h ^= u64::from(*b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        };
        for host in &self.hosts {
            for &r in &host.ranks {
                eat(&(r as u64).to_le_bytes());
            }
            for c in [host.intra, host.net] {
                eat(c.class.name().as_bytes());
                eat(&c.alpha_us.to_bits().to_le_bytes());
                eat(&c.bw_gbs.to_bits().to_le_bytes());
            }
            eat(b"|");
        }
        h
    }

    /// One line per host: ranks, intra and network cost.
    pub fn describe(&self) -> Vec<String> {
        let cost = |c: &LinkCost| {
            format!(
                "{} {:.1} us {:.3} GB/s{}",
                c.class.name(),
                c.alpha_us,
                c.bw_gbs,
                if c.measured { " (measured)" } else { "" }
            )
        };
        let mut v = vec![format!(
            "{} ranks on {} hosts (fingerprint {:016x})",
            self.nranks(),
            self.hosts.len(),
            self.fingerprint()
        )];
        for (i, h) in self.hosts.iter().enumerate() {
            v.push(format!(
                "host {i} {}: ranks {:?}; intra {}; net {}",
                h.name,
                h.ranks,
                cost(&h.intra),
                cost(&h.net)
            ));
        }
        for (r, p) in self.probes.iter().enumerate() {
            v.push(format!(
                "rank {r}: numa {} cpus {} nic {} ({} Mbit/s) rdma {} device {}:{}",
                p.numa.map_or("?".into(), |n| n.to_string()),
                if p.cpus.is_empty() { "?" } else { &p.cpus },
                p.net_if.as_deref().unwrap_or("?"),
                p.net_speed_mbps().map_or("?".into(), |s| s.to_string()),
                p.rdma.len(),
                p.device.vendor,
                p.device.index
            ));
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(host: &str) -> RankProbe {
        RankProbe::bare(host)
    }

    #[test]
    fn probes_group_into_hosts_and_round_trip() {
        let t = Topology::from_probes(
            vec![probe("a"), probe("b"), probe("a"), probe("b"), probe("c")],
            true,
        )
        .unwrap();
        assert_eq!(t.hosts.len(), 3);
        assert_eq!(t.hosts[0].ranks, [0, 2]);
        assert_eq!(t.hosts[1].ranks, [1, 3]);
        assert_eq!((t.host_of(3), t.local_index(3)), (1, 1));
        assert_eq!(t.link(0, 2).class, LinkClass::Shm);
        assert_eq!(t.link(0, 1).class, LinkClass::Tcp);
        let back = Topology::from_json(&t.to_json()).unwrap();
        assert_eq!(back, t);
        assert_eq!(back.fingerprint(), t.fingerprint());
    }

    #[test]
    fn shrinking_renumbers_and_drops_empty_hosts() {
        let t = Topology::from_probes(
            vec![probe("a"), probe("a"), probe("b"), probe("c"), probe("c")],
            true,
        )
        .unwrap();
        let s = t.without(&[1, 2]).unwrap();
        assert_eq!(s.nranks(), 3);
        let ranks: Vec<Vec<usize>> = s.hosts.iter().map(|h| h.ranks.clone()).collect();
        assert_eq!(ranks, [vec![0], vec![1, 2]]);
        assert_eq!(s.probes.len(), 3);
        assert!(t.without(&[0, 1, 2, 3, 4]).is_err());
    }

    #[test]
    fn bad_models_are_refused() {
        let host = |ranks: Vec<usize>| Host {
            name: "h".into(),
            ranks,
            intra: SHM_DEFAULT,
            net: SHM_DEFAULT,
        };
        assert!(Topology::new(vec![host(vec![0, 1]), host(vec![1])], vec![]).is_err());
        assert!(Topology::new(vec![host(vec![0, 2])], vec![]).is_err());
        assert!(Topology::new(vec![host(vec![])], vec![]).is_err());
        let mut h = host(vec![0]);
        h.net.bw_gbs = 0.0;
        assert!(Topology::new(vec![h], vec![]).is_err());
        assert!(Topology::from_json("{\"hosts\": 3}").is_err());
        assert!(Topology::from_json("[]").is_err());
    }
}
