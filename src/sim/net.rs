//! The simulated machine: the planner's [`Topology`] (hosts, their shared-memory and
//! network links, pods and their uplink) plus what the planner does not model:
//! hosts with fewer cores than ranks. Built from a JSON model or by
//! [`Cluster::build`].

use crate::config::TlsPolicy;
use crate::error::{Error, Result};
use crate::topo::{Host, LinkClass, LinkCost, Pods, Topology};

/// Time TLS 1.3 adds to a byte on an encrypted link, in ns: the sender's encryption
/// (AES-256-GCM, rustls with ring; the receiver decrypts the previous record
/// meanwhile), measured by `cargo run --release --example tls_cost` on the 2-core
/// AMD EPYC machine (0.56-0.61 ns/B encrypt, 0.48-0.82 decrypt; docs/performance.md).
/// It predicts 93% of plaintext on the 1 Gbit/s emulated link, as measured there.
pub const TLS_NS_PER_BYTE: f64 = 0.6;

/// The network a simulation runs over.
#[derive(Debug, Clone)]
pub struct Network {
    /// Hosts, ranks, link costs and pods: what the planner sees.
    pub topo: Topology,
    /// Pod of each host (all 0 with one pod), from `topo`.
    pub pod_of: Vec<usize>,
    /// Each pod's uplink to the others (one each way), crossed in addition to the
    /// hosts' NICs by traffic between pods; its alpha adds to theirs. From `topo`.
    pub pod_link: Option<LinkCost>,
    /// Cores per host: shared-memory copies of a host share `cores` x its shared-memory
    /// bandwidth (`None`: a core per rank).
    pub cores: Option<usize>,
}

impl Network {
    /// The network of a model (its pods included), a core per rank.
    pub fn from_topology(topo: Topology) -> Network {
        let pod_of = (0..topo.hosts.len()).map(|h| topo.pod_of(h)).collect();
        let pod_link = topo.pods.as_ref().map(|p| p.uplink);
        Network {
            topo,
            pod_of,
            pod_link,
            cores: None,
        }
    }

    /// This network with TLS on the links `policy` (`MIXCCL_TLS`) encrypts: each of
    /// their bytes also costs [`TLS_NS_PER_BYTE`], in series with the wire (the
    /// sending rank encrypts before the kernel sends). `cross-host` and `all` slow
    /// every host's network link; `cross-pod` the pods' uplink, whose bytes the pod's
    /// hosts encrypt in parallel (an approximation: the engine has no per-message
    /// cost by pod), or without pods every host's network link.
    pub fn with_tls(mut self, policy: TlsPolicy) -> Network {
        let slow = |l: &mut LinkCost, per_byte: f64| {
            // GB/s is bytes per ns.
            l.bw_gbs = 1.0 / (1.0 / l.bw_gbs + per_byte);
        };
        match policy {
            TlsPolicy::Off => {}
            TlsPolicy::CrossPod if self.pod_link.is_some() => {
                let hosts = self.topo.hosts.len() / self.topo.npods().max(1);
                let per_byte = TLS_NS_PER_BYTE / hosts.max(1) as f64;
                if let Some(l) = &mut self.pod_link {
                    slow(l, per_byte);
                }
                if let Some(p) = &mut self.topo.pods {
                    slow(&mut p.uplink, per_byte);
                }
            }
            _ => {
                for h in &mut self.topo.hosts {
                    slow(&mut h.net, TLS_NS_PER_BYTE);
                }
            }
        }
        self
    }

    /// The smallest number of ranks `P` such that rank `r` and rank `r + P` see the
    /// same machine: hosts of equal size holding consecutive ranks, whose costs and
    /// pod layout repeat every `P / ranks_per_host` hosts. `None` when only the
    /// whole network repeats.
    pub(crate) fn period(&self) -> Option<usize> {
        let hosts = &self.topo.hosts;
        let l = hosts[0].ranks.len();
        let contiguous = hosts.iter().enumerate().all(|(h, x)| {
            x.ranks.len() == l && x.ranks.iter().enumerate().all(|(i, &r)| r == h * l + i)
        });
        if !contiguous {
            return None;
        }
        let nh = hosts.len();
        let same = |a: &Host, b: &Host| a.intra == b.intra && a.net == b.net;
        // Pods must be runs of equal numbers of consecutive hosts.
        let per_pod = self.pod_of.iter().filter(|&&p| p == self.pod_of[0]).count();
        if (0..nh).any(|h| self.pod_of[h] != h / per_pod) {
            return None;
        }
        let one_pod = per_pod == nh;
        (1..nh)
            .filter(|q| nh % q == 0 && (one_pod || q % per_pod == 0))
            .find(|&q| (0..nh).all(|h| same(&hosts[h], &hosts[h % q])))
            .map(|q| q * l)
    }
}

/// A generated cluster: `hosts` x `ranks_per_host`, optionally a fraction of hosts
/// with a slower NIC, and pods joined by a slower link.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// Number of hosts.
    pub hosts: usize,
    /// Ranks on each host.
    pub ranks_per_host: usize,
    /// The link between two ranks of a host.
    pub intra: LinkCost,
    /// Each host's network link.
    pub inter: LinkCost,
    /// Fraction of hosts (0..=1) whose NIC runs at `slow_gbs`, spread evenly (with
    /// 0.5, every second host).
    pub slow_fraction: f64,
    /// Bandwidth of the slow hosts' NICs, GB/s.
    pub slow_gbs: f64,
    /// Number of pods (consecutive hosts, equal shares).
    pub pods: usize,
    /// The link joining the pods (per pod uplink); needed with more than one pod.
    pub pod_link: Option<LinkCost>,
    /// Cores per host (see [`Network::cores`]).
    pub cores: Option<usize>,
}

impl Cluster {
    /// `hosts` x `ranks_per_host` over `intra` and `inter`, one pod, equal NICs.
    pub fn new(hosts: usize, ranks_per_host: usize, intra: LinkCost, inter: LinkCost) -> Cluster {
        Cluster {
            hosts,
            ranks_per_host,
            intra,
            inter,
            slow_fraction: 0.0,
            slow_gbs: inter.bw_gbs,
            pods: 1,
            pod_link: None,
            cores: None,
        }
    }

    /// The network.
    pub fn build(&self) -> Result<Network> {
        if self.hosts == 0 || self.ranks_per_host == 0 {
            return Err(Error::invalid(
                "a cluster needs at least one host and one rank per host",
            ));
        }
        if self.pods == 0 || self.hosts % self.pods != 0 {
            return Err(Error::invalid(format!(
                "{} hosts do not split into {} equal pods",
                self.hosts, self.pods
            )));
        }
        if !(0.0..=1.0).contains(&self.slow_fraction) {
            return Err(Error::invalid(format!(
                "the slow fraction must lie in 0..=1 (got {})",
                self.slow_fraction
            )));
        }
        let f = self.slow_fraction;
        let hosts = (0..self.hosts)
            .map(|h| {
                // Host h is slow when the running count of slow hosts steps up at it.
                let slow = ((h + 1) as f64 * f).floor() > (h as f64 * f).floor();
                let mut net = self.inter;
                if slow {
                    net.bw_gbs = self.slow_gbs;
                }
                Host {
                    name: format!("h{h}"),
                    ranks: (h * self.ranks_per_host..(h + 1) * self.ranks_per_host).collect(),
                    intra: self.intra,
                    net,
                }
            })
            .collect();
        let mut topo = Topology::new(hosts, Vec::new())?;
        if self.pods > 1 {
            let uplink = self
                .pod_link
                .ok_or_else(|| Error::invalid(format!("{} pods need a pod link", self.pods)))?;
            let per_pod = self.hosts / self.pods;
            let hosts = (0..self.pods)
                .map(|p| (p * per_pod..(p + 1) * per_pod).collect())
                .collect();
            topo = topo.with_pods(Pods { hosts, uplink })?;
        }
        Ok(Network {
            cores: self.cores,
            ..Network::from_topology(topo)
        })
    }
}

/// Parses `CLASS:ALPHA_US,GBIT_PER_S` (`shm:5,32`, `rdma:2,400`): bandwidth in Gbit/s.
pub fn parse_link(s: &str) -> Result<LinkCost> {
    let bad = || {
        Error::invalid(format!(
            "link '{s}': expected CLASS:ALPHA_US,GBIT_PER_S with CLASS shm, tcp, rdma or mem"
        ))
    };
    let (class, rest) = s.split_once(':').ok_or_else(bad)?;
    let class = LinkClass::from_name(class).ok_or_else(bad)?;
    let (a, b) = rest.split_once(',').ok_or_else(bad)?;
    let alpha_us: f64 = a.trim().parse().map_err(|_| bad())?;
    let gbit: f64 = b.trim().parse().map_err(|_| bad())?;
    if !(alpha_us >= 0.0 && gbit > 0.0 && alpha_us.is_finite() && gbit.is_finite()) {
        return Err(bad());
    }
    Ok(LinkCost {
        class,
        alpha_us,
        bw_gbs: gbit / 8.0,
        measured: false,
    })
}

#[cfg(test)]
mod tls_cost_tests {
    use super::*;

    #[test]
    fn tls_slows_the_links_it_encrypts() {
        let intra = parse_link("shm:5,32").unwrap();
        let inter = parse_link("tcp:20,10").unwrap();
        let mut c = Cluster::new(4, 2, intra, inter);
        let plain = c.build().unwrap();
        let want = 1.0 / (1.0 / inter.bw_gbs + TLS_NS_PER_BYTE);
        let host = plain.clone().with_tls(TlsPolicy::CrossHost);
        for h in &host.topo.hosts {
            assert!((h.net.bw_gbs - want).abs() < 1e-12);
            assert_eq!(h.intra.bw_gbs, intra.bw_gbs);
        }
        let off = plain.clone().with_tls(TlsPolicy::Off);
        assert_eq!(off.topo.hosts[0].net.bw_gbs, inter.bw_gbs);
        // With pods, cross-pod slows the uplink only (2 hosts per pod encrypt it).
        c.pods = 2;
        c.pod_link = Some(parse_link("tcp:5000,10").unwrap());
        let pods = c.build().unwrap().with_tls(TlsPolicy::CrossPod);
        assert_eq!(pods.topo.hosts[0].net.bw_gbs, inter.bw_gbs);
        let up = 1.0 / (1.0 / 1.25 + TLS_NS_PER_BYTE / 2.0);
        assert!((pods.pod_link.unwrap().bw_gbs - up).abs() < 1e-12);
    }
}

/// A small deterministic generator (splitmix64): the same seed gives the same
/// clusters on every machine and every run.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x6d69_7863_636c_5f31)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }

    /// Log-uniform in `[lo, hi]`.
    pub fn log(&mut self, lo: f64, hi: f64) -> f64 {
        lo * (hi / lo).powf(self.unit())
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
}

/// The limits of [`Cluster::random`].
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Fewest and most hosts (drawn log-uniform between them).
    pub hosts: (usize, usize),
    /// Fewest and most ranks per host (uniform).
    pub ranks_per_host: (usize, usize),
    /// At most this many ranks: hosts are drawn again (at most 2,048 x 8 = 16,384).
    pub max_ranks: usize,
}

impl Default for Shape {
    fn default() -> Shape {
        Shape {
            hosts: (2, 2048),
            ranks_per_host: (1, 8),
            max_ranks: 16384,
        }
    }
}

impl Cluster {
    /// A random cluster from `rng` within `shape`: hosts log-uniform, ranks per host
    /// uniform; NICs of 10, 25, 100, 200 or 400 Gbit/s (TCP below 100, RDMA from
    /// it); shared memory 1-50x the NIC's bandwidth (log-uniform); every alpha
    /// 1-20 us; in a quarter of clusters 2, 4 or 8 pods (as the hosts divide) whose
    /// uplinks carry 1/16 to 1x of their hosts' NICs together; in a quarter, slow
    /// NICs (one host, a quarter or half of them, spread evenly) at 1/2 to 1/10 of
    /// the others' bandwidth.
    pub fn random(rng: &mut Rng, shape: &Shape) -> Cluster {
        let (lo, hi) = shape.ranks_per_host;
        let ranks_per_host = rng.range(lo.max(1), hi.max(lo.max(1)));
        let most = (shape.max_ranks / ranks_per_host).clamp(1, shape.hosts.1.max(1));
        let least = shape.hosts.0.clamp(1, most);
        let mut hosts = rng.log(least as f64, most as f64 + 0.999).floor() as usize;
        hosts = hosts.clamp(least, most);
        let gbit = [10.0, 25.0, 100.0, 200.0, 400.0][rng.range(0, 4)];
        let class = if gbit < 100.0 {
            LinkClass::Tcp
        } else {
            LinkClass::Rdma
        };
        let inter = LinkCost {
            class,
            alpha_us: rng.log(1.0, 20.0),
            bw_gbs: gbit / 8.0,
            measured: false,
        };
        let intra = LinkCost {
            class: LinkClass::Shm,
            alpha_us: rng.log(1.0, 20.0),
            bw_gbs: inter.bw_gbs * rng.log(1.0, 50.0),
            measured: false,
        };
        let mut c = Cluster::new(hosts, ranks_per_host, intra, inter);
        if rng.chance(0.25) {
            let options: Vec<usize> = [2, 4, 8]
                .into_iter()
                .filter(|p| hosts % p == 0 && hosts / p >= 1)
                .collect();
            if !options.is_empty() {
                let pods = options[rng.range(0, options.len() - 1)];
                let share = rng.log(1.0 / 16.0, 1.0);
                c.pods = pods;
                c.pod_link = Some(LinkCost {
                    class: LinkClass::Tcp,
                    alpha_us: rng.log(1.0, 20.0),
                    bw_gbs: inter.bw_gbs * (hosts / pods) as f64 * share,
                    measured: false,
                });
            }
        }
        if rng.chance(0.25) {
            c.slow_fraction = [1.0 / hosts as f64, 0.25, 0.5][rng.range(0, 2)];
            c.slow_gbs = inter.bw_gbs / rng.log(2.0, 10.0);
        }
        c
    }

    /// One line: `64x4 shm 3.2us 120.0GB/s, rdma 4.1us 50.0GB/s, 2 pods ...`.
    pub fn summary(&self) -> String {
        let link = |l: &LinkCost| format!("{} {:.1}us {:.2}GB/s", l.class, l.alpha_us, l.bw_gbs);
        let mut s = format!(
            "{}x{} intra {}, net {}",
            self.hosts,
            self.ranks_per_host,
            link(&self.intra),
            link(&self.inter)
        );
        if self.pods > 1 {
            if let Some(p) = &self.pod_link {
                s += &format!(", {} pods uplink {}", self.pods, link(p));
            }
        }
        if self.slow_fraction > 0.0 {
            s += &format!(
                ", slow NICs {:.3} of hosts at {:.2}GB/s",
                self.slow_fraction, self.slow_gbs
            );
        }
        s
    }
}
