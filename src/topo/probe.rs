//! The local facts one rank can learn about itself without talking to anyone: host
//! identity, NUMA node and CPU affinity, network interfaces with their link speed,
//! RDMA ports, and the device its buffers live on. Published in the bootstrap info,
//! so every rank sees every rank's probe. Missing files mean "unknown", never an error.

use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// Interfaces recorded per rank at most (the bootstrap info is bounded).
const MAX_NICS: usize = 6;
/// RDMA ports recorded per rank at most.
const MAX_PORTS: usize = 4;
/// Longest encoded probe, in bytes; longer ones drop NICs and ports until they fit.
pub(crate) const MAX_ENCODED: usize = 1800;

/// A network interface and its link speed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Nic {
    /// Interface name (`eth0`).
    pub name: String,
    /// `/sys/class/net/<name>/speed` in Mbit/s, when the driver reports one.
    #[serde(default)]
    pub speed_mbps: Option<u64>,
}

/// An RDMA port from `/sys/class/infiniband`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RdmaPort {
    /// `mlx5_0:1`.
    pub name: String,
    /// The port's rate in Gbit/s, when readable.
    #[serde(default)]
    pub rate_gbps: Option<f64>,
    /// The port is ACTIVE.
    #[serde(default)]
    pub active: bool,
}

/// Where this rank's buffers live.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceInfo {
    /// `host` for host memory, else the vendor shim's name.
    pub vendor: String,
    /// Device index within the vendor (0 for host memory).
    pub index: u32,
    /// PCI bus id (`0000:3b:00.0`), empty for host memory.
    #[serde(default)]
    pub pci_bus_id: String,
}

/// One rank's probe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RankProbe {
    /// Host identity (`hostname/boot id/net namespace`, or `MIXCCL_HOST_ID`).
    pub host: String,
    /// NUMA node of the first CPU this rank may run on.
    #[serde(default)]
    pub numa: Option<u32>,
    /// CPUs this rank may run on (`Cpus_allowed_list`, e.g. `0-3,8`).
    #[serde(default)]
    pub cpus: String,
    /// The interface that carries this rank's TCP traffic, if known.
    #[serde(default)]
    pub net_if: Option<String>,
    /// Non-loopback interfaces.
    #[serde(default)]
    pub nics: Vec<Nic>,
    /// RDMA ports (none where `/sys/class/infiniband` is absent).
    #[serde(default)]
    pub rdma: Vec<RdmaPort>,
    /// The rank's device.
    pub device: DeviceInfo,
}

impl RankProbe {
    /// A probe that knows only the host (for in-process communicators and tests).
    pub fn bare(host: &str) -> RankProbe {
        RankProbe {
            host: host.to_string(),
            numa: None,
            cpus: String::new(),
            net_if: None,
            nics: Vec::new(),
            rdma: Vec::new(),
            device: DeviceInfo {
                vendor: "host".into(),
                index: 0,
                pci_bus_id: String::new(),
            },
        }
    }

    /// Link speed of the data interface in Mbit/s, if the probe has it.
    pub fn net_speed_mbps(&self) -> Option<u64> {
        let name = self.net_if.as_deref()?;
        self.nics
            .iter()
            .find(|n| n.name == name)
            .and_then(|n| n.speed_mbps)
    }

    /// The fastest active RDMA port's rate in Gbit/s.
    pub fn rdma_gbps(&self) -> Option<f64> {
        self.rdma
            .iter()
            .filter(|p| p.active)
            .filter_map(|p| p.rate_gbps)
            .fold(None, |m, r| Some(m.map_or(r, |m: f64| m.max(r))))
    }

    /// Compact JSON of at most [`MAX_ENCODED`] bytes (NICs and ports dropped to fit).
    pub(crate) fn encode(&self) -> String {
        let mut p = self.clone();
        loop {
            let text = serde_json::to_string(&p).unwrap_or_default();
            if text.len() <= MAX_ENCODED {
                return text;
            }
            if p.rdma.pop().is_none() && p.nics.pop().is_none() {
                p.cpus.clear();
                p.host.truncate(256);
                return serde_json::to_string(&p).unwrap_or_default();
            }
        }
    }

    /// Parses [`RankProbe::encode`]'s output.
    pub(crate) fn decode(text: &str) -> std::result::Result<RankProbe, String> {
        serde_json::from_str(text).map_err(|e| format!("bad topology probe: {e}"))
    }
}

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// Parses a Linux CPU list (`0-3,8,10-11`) into CPU numbers (at most 4096 of them).
fn cpu_list(s: &str) -> Vec<u32> {
    let mut v = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(a), Ok(b)) = (a.parse::<u32>(), b.parse::<u32>()) {
            for c in a..=b.min(a.saturating_add(4096)) {
                v.push(c);
                if v.len() >= 4096 {
                    return v;
                }
            }
        }
    }
    v
}

fn numa_of(cpu: u32) -> Option<u32> {
    let nodes = std::fs::read_dir("/sys/devices/system/node").ok()?;
    for e in nodes.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(id) = name.strip_prefix("node").and_then(|n| n.parse().ok()) else {
            continue;
        };
        let list = read(&format!("/sys/devices/system/node/{name}/cpulist")).unwrap_or_default();
        if cpu_list(&list).contains(&cpu) {
            return Some(id);
        }
    }
    None
}

fn nics() -> Vec<Nic> {
    let mut v: Vec<Nic> = std::fs::read_dir("/sys/class/net")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n != "lo")
                .map(|name| Nic {
                    speed_mbps: read(&format!("/sys/class/net/{name}/speed"))
                        .and_then(|s| s.parse::<i64>().ok())
                        .filter(|s| *s > 0)
                        .map(|s| s as u64),
                    name,
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
}

fn rdma_ports() -> Vec<RdmaPort> {
    let mut v = Vec::new();
    let Ok(devs) = std::fs::read_dir("/sys/class/infiniband") else {
        return v;
    };
    for d in devs.flatten() {
        let dev = d.file_name().to_string_lossy().into_owned();
        let Ok(ports) = std::fs::read_dir(format!("/sys/class/infiniband/{dev}/ports")) else {
            continue;
        };
        for p in ports.flatten() {
            let port = p.file_name().to_string_lossy().into_owned();
            let base = format!("/sys/class/infiniband/{dev}/ports/{port}");
            // "100 Gb/sec (4X EDR)"
            let rate_gbps = read(&format!("{base}/rate"))
                .and_then(|r| r.split_whitespace().next().and_then(|x| x.parse().ok()));
            let active = read(&format!("{base}/state")).is_some_and(|s| s.contains("ACTIVE"));
            v.push(RdmaPort {
                name: format!("{dev}:{port}"),
                rate_gbps,
                active,
            });
        }
    }
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
}

/// Probes this process. `local_ip` is the address its TCP traffic leaves from.
pub(crate) fn probe(host: String, local_ip: Option<IpAddr>) -> RankProbe {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let cpus = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let numa = cpu_list(&cpus).first().and_then(|&c| numa_of(c));
    let net_if = local_ip.and_then(|ip| {
        crate::sys::interfaces()
            .ok()?
            .into_iter()
            .find(|i| i.ip == ip)
            .map(|i| i.name)
    });
    let mut nics = nics();
    // Keep the data interface when trimming to the bound.
    nics.sort_by_key(|n| Some(&n.name) != net_if.as_ref());
    nics.truncate(MAX_NICS);
    let mut rdma = rdma_ports();
    rdma.truncate(MAX_PORTS);
    RankProbe {
        host,
        numa,
        cpus,
        net_if,
        nics,
        rdma,
        device: DeviceInfo {
            vendor: "host".into(),
            index: 0,
            pci_bus_id: String::new(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_parse() {
        assert_eq!(cpu_list("0-3,8"), [0, 1, 2, 3, 8]);
        assert_eq!(cpu_list(""), Vec::<u32>::new());
        assert_eq!(cpu_list("x,2"), [2]);
    }

    #[test]
    fn probe_round_trips_and_stays_bounded() {
        let p = probe("h".into(), Some("127.0.0.1".parse().unwrap()));
        assert_eq!(RankProbe::decode(&p.encode()).unwrap(), p);
        assert!(!p.cpus.is_empty(), "{p:?}");
        let mut big = p.clone();
        big.nics = (0..500)
            .map(|i| Nic {
                name: format!("eth{i}"),
                speed_mbps: Some(1000),
            })
            .collect();
        let e = big.encode();
        assert!(e.len() <= MAX_ENCODED, "{}", e.len());
        assert!(RankProbe::decode(&e).is_ok());
        assert!(RankProbe::decode("{").is_err());
    }
}
