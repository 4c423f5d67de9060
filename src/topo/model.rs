//! The model every rank plans with: hosts, the ranks on each, and per host the
//! cost of a link inside it and of its network link, each as latency (alpha) and
//! bandwidth (beta); optionally hosts grouped into pods whose traffic to other pods
//! crosses a slower uplink. Built from the ranks' probes, refined by measurement,
//! dumped and loaded as JSON. It must be equal on all ranks;
//! [`Topology::fingerprint`] lets them check.

use super::probe::RankProbe;
use crate::error::{Error, Result};
pub use crate::transport::LinkClass;
use serde::{Deserialize, Serialize};

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

/// What a vendor's collective library costs inside an island (ranks of one host and
/// vendor, see `comm/island.rs`): its all-reduce's bus bandwidth and its latency per
/// step, for the planner and `mixccl-sim islands`. Defaults per library are assumed
/// figures for current 8-device hosts (not measured by mixccl); a model file's
/// `island_links` overrides them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IslandLink {
    /// The library: `nccl`, `rccl`, `hccl`, `cncl` or `mccl`.
    pub library: String,
    /// Latency of one step in microseconds (alpha).
    pub alpha_us: f64,
    /// Bus bandwidth per device in GB/s (1/beta).
    pub bw_gbs: f64,
}

impl IslandLink {
    /// The assumed figures for `library`: NCCL over NVLink 4 (H100/H200), RCCL over
    /// Infinity Fabric (MI300X), HCCL over HCCS (Ascend 910B), CNCL over MLU-Link,
    /// MCCL over MTLink.
    pub fn default_for(library: &str) -> Option<IslandLink> {
        let (alpha_us, bw_gbs) = match library {
            "nccl" => (8.0, 300.0),
            "rccl" => (10.0, 150.0),
            "hccl" => (15.0, 100.0),
            "cncl" => (20.0, 50.0),
            "mccl" => (20.0, 60.0),
            _ => return None,
        };
        Some(IslandLink {
            library: library.to_string(),
            alpha_us,
            bw_gbs,
        })
    }

    /// Seconds for a ring all-reduce of `bytes` over `m` devices.
    pub fn all_reduce(&self, m: usize, bytes: f64) -> f64 {
        if m < 2 {
            return 0.0;
        }
        let steps = 2.0 * (m as f64 - 1.0);
        steps * self.alpha_us * 1e-6 + steps / m as f64 * bytes / (self.bw_gbs * 1e9)
    }

    /// Seconds for a ring reduce-scatter (or all-gather) of `bytes` in all over `m`
    /// devices.
    pub fn reduce_scatter(&self, m: usize, bytes: f64) -> f64 {
        self.all_reduce(m, bytes) / 2.0
    }

    /// Seconds for a pipelined broadcast of `bytes` over `m` devices.
    pub fn broadcast(&self, m: usize, bytes: f64) -> f64 {
        if m < 2 {
            return 0.0;
        }
        (m as f64 - 1.0) * self.alpha_us * 1e-6 + bytes / (self.bw_gbs * 1e9)
    }
}

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

/// Hosts grouped into pods (racks, datacenters): traffic between two pods crosses
/// the sending pod's uplink out and the receiving pod's uplink in, on top of the
/// two hosts' network links. The probes do not find pods; a model file states them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pods {
    /// Each pod's hosts (indices into [`Topology::hosts`]); every host is in exactly one.
    pub hosts: Vec<Vec<usize>>,
    /// Every pod's uplink to the others (each direction), shared by all hosts of the
    /// pod. A message between pods pays its alpha in addition to the hosts' link.
    pub uplink: LinkCost,
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
    /// Pods, when the hosts are not all behind one network (optional; files without
    /// it load as one pod).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<Pods>,
    /// The vendor libraries' costs inside islands, where they differ from
    /// [`IslandLink::default_for`] (optional).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub island_links: Vec<IslandLink>,
    #[serde(skip)]
    host_of: Vec<usize>,
    #[serde(skip)]
    pod_of: Vec<usize>,
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
            pods: None,
            island_links: Vec::new(),
            host_of: Vec::new(),
            pod_of: Vec::new(),
        };
        t.index()?;
        Ok(t)
    }

    /// The cost of `library` inside an island: the model file's figures, else the
    /// library's defaults (`None` for an unknown library).
    pub fn island_link(&self, library: &str) -> Option<IslandLink> {
        self.island_links
            .iter()
            .find(|l| l.library == library)
            .cloned()
            .or_else(|| IslandLink::default_for(library))
    }

    /// This model with its hosts grouped into `pods` (checked: every host in exactly
    /// one pod, the uplink's costs positive).
    pub fn with_pods(mut self, pods: Pods) -> Result<Topology> {
        self.pods = Some(pods);
        self.index()?;
        Ok(self)
    }

    fn index(&mut self) -> Result<()> {
        if self.version != 1 {
            return Err(Error::invalid(format!(
                "topology: version {} is not supported (1)",
                self.version
            )));
        }
        for l in &self.island_links {
            let ok = |x: f64| x.is_finite() && x > 0.0;
            if IslandLink::default_for(&l.library).is_none() || !ok(l.alpha_us) || !ok(l.bw_gbs) {
                return Err(Error::invalid(format!(
                    "topology: island link {:?} needs a library (nccl, rccl, hccl, cncl, \
                     mccl), a positive alpha_us and bw_gbs",
                    l.library
                )));
            }
        }
        let n: usize = self.hosts.iter().map(|h| h.ranks.len()).sum();
        if n == 0 || n > crate::wire::MAX_RANKS {
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
        let mut pod_of = vec![0; self.hosts.len()];
        if let Some(pods) = &self.pods {
            pods.uplink.check("the pods' uplink")?;
            pod_of.fill(usize::MAX);
            for (p, hs) in pods.hosts.iter().enumerate() {
                if hs.is_empty() {
                    return Err(Error::invalid(format!("topology: pod {p} has no hosts")));
                }
                for &h in hs {
                    match pod_of.get_mut(h) {
                        Some(slot) if *slot == usize::MAX => *slot = p,
                        _ => {
                            return Err(Error::invalid(format!(
                                "topology: host {h} of pod {p} is not a host, or is in two pods"
                            )))
                        }
                    }
                }
            }
            if let Some(h) = pod_of.iter().position(|&p| p == usize::MAX) {
                return Err(Error::invalid(format!("topology: host {h} is in no pod")));
            }
        }
        self.pod_of = pod_of;
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
        let mut new_host = vec![None; self.hosts.len()];
        let mut hosts = Vec::new();
        for (i, h) in self.hosts.iter().enumerate() {
            let ranks: Vec<usize> = h.ranks.iter().filter_map(|&r| new_rank(r)).collect();
            if !ranks.is_empty() {
                new_host[i] = Some(hosts.len());
                hosts.push(Host { ranks, ..h.clone() });
            }
        }
        let probes = if self.probes.is_empty() {
            Vec::new()
        } else {
            survivors.iter().map(|&r| self.probes[r].clone()).collect()
        };
        let t = Topology::new(hosts, probes)?;
        match &self.pods {
            None => Ok(t),
            Some(pods) => t.with_pods(Pods {
                hosts: pods
                    .hosts
                    .iter()
                    .map(|hs| hs.iter().filter_map(|&h| new_host[h]).collect::<Vec<_>>())
                    .filter(|hs| !hs.is_empty())
                    .collect(),
                uplink: pods.uplink,
            }),
        }
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

    /// Pod of host `host` (0 without pods).
    pub fn pod_of(&self, host: usize) -> usize {
        self.pod_of[host]
    }

    /// Number of pods (1 without pods).
    pub fn npods(&self) -> usize {
        self.pods.as_ref().map_or(1, |p| p.hosts.len())
    }

    /// The pod uplink a message from rank `a` to rank `b` crosses (in addition to
    /// [`Topology::link`]), when they are in different pods.
    pub fn crossing(&self, a: usize, b: usize) -> Option<LinkCost> {
        let (pa, pb) = (self.pod_of[self.host_of[a]], self.pod_of[self.host_of[b]]);
        self.pods.as_ref().filter(|_| pa != pb).map(|p| p.uplink)
    }

    /// The cost of a message from `a` to `b` over the hosts' links (between pods it
    /// also crosses [`Topology::crossing`]).
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

    /// A 64-bit FNV-1a hash of everything the planner reads (hosts, ranks, costs,
    /// pods), so ranks can check that they plan with the same model. A model without
    /// pods hashes as it did before pods existed.
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
        if let Some(pods) = &self.pods {
            eat(b"pods");
            for hs in &pods.hosts {
                for &x in hs {
                    eat(&(x as u64).to_le_bytes());
                }
                eat(b"|");
            }
            let c = pods.uplink;
            eat(c.class.name().as_bytes());
            eat(&c.alpha_us.to_bits().to_le_bytes());
            eat(&c.bw_gbs.to_bits().to_le_bytes());
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
        if let Some(pods) = &self.pods {
            for (i, hs) in pods.hosts.iter().enumerate() {
                v.push(format!(
                    "pod {i}: {} hosts ({}..={}); uplink {}",
                    hs.len(),
                    hs.iter().min().unwrap_or(&0),
                    hs.iter().max().unwrap_or(&0),
                    cost(&pods.uplink)
                ));
            }
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
    fn pods_round_trip_and_change_the_fingerprint() {
        let t = Topology::from_probes(
            vec![probe("a"), probe("b"), probe("a"), probe("c"), probe("c")],
            true,
        )
        .unwrap();
        // Old files (no "pods") load as one pod and hash as before.
        assert!(!t.to_json().contains("pods"));
        assert_eq!((t.npods(), t.crossing(0, 1)), (1, None));
        let uplink = LinkCost {
            class: LinkClass::Tcp,
            alpha_us: 5000.0,
            bw_gbs: 12.5,
            measured: false,
        };
        let p = t
            .clone()
            .with_pods(Pods {
                hosts: vec![vec![0, 1], vec![2]],
                uplink,
            })
            .unwrap();
        assert_ne!(p.fingerprint(), t.fingerprint());
        assert_eq!((p.npods(), p.pod_of(2)), (2, 1));
        assert_eq!(p.crossing(0, 1), None);
        assert_eq!(p.crossing(1, 3), Some(uplink));
        // The hosts' link is unchanged; the uplink comes on top.
        assert_eq!(p.link(1, 3), t.link(1, 3));
        let back = Topology::from_json(&p.to_json()).unwrap();
        assert_eq!(back, p);
        assert_eq!(back.fingerprint(), p.fingerprint());
        // Shrinking drops emptied hosts and pods and renumbers the rest.
        let s = p.without(&[3, 4]).unwrap();
        assert_eq!(s.pods.as_ref().unwrap().hosts, [vec![0, 1]]);
        let s = p.without(&[1]).unwrap();
        assert_eq!(s.pods.as_ref().unwrap().hosts, [vec![0], vec![1]]);
        // Every host in exactly one pod.
        for hosts in [
            vec![vec![0, 1]],
            vec![vec![0, 1], vec![1, 2]],
            vec![vec![0, 1, 2, 3]],
        ] {
            assert!(t.clone().with_pods(Pods { hosts, uplink }).is_err());
        }
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
