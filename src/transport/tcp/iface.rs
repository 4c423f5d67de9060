//! Which address to listen on: `MIXCCL_SOCKET_IFNAME` (NCCL_SOCKET_IFNAME syntax,
//! `transport::filter`) or the route towards the bootstrap root.

use crate::error::{Error, Result};
use crate::sys;
use crate::transport::filter::NameFilter;
use std::net::{IpAddr, SocketAddr, UdpSocket};

/// The address to listen on: the first address of an interface matching `spec`, or
/// without a spec the first non-loopback, non-docker interface that is up (IPv4
/// first), else loopback.
pub fn pick_interface(spec: Option<&str>) -> Result<IpAddr> {
    let ifs = sys::interfaces().map_err(|e| Error::io("listing network interfaces", e))?;
    let filter = spec
        .map(|s| NameFilter::parse("MIXCCL_SOCKET_IFNAME", s, false))
        .transpose()
        .map_err(Error::invalid)?;
    let ok = |i: &&sys::InterfaceAddr| match &filter {
        Some(f) => i.up && f.selects(&i.name, None),
        None => {
            i.up && !i.loopback && !i.name.starts_with("docker") && !i.name.starts_with("virbr")
        }
    };
    let pick = ifs.iter().filter(ok).find(|i| i.ip.is_ipv4()).or_else(|| {
        ifs.iter()
            .filter(ok)
            .find(|i| !i.ip.is_unicast_link_local_v6())
    });
    match (pick, spec) {
        (Some(i), _) => Ok(i.ip),
        (None, None) => Ok(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)),
        (None, Some(s)) => Err(Error::invalid(format!(
            "MIXCCL_SOCKET_IFNAME={s:?} matches no interface that is up (have: {})",
            ifs.iter()
                .map(|i| i.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

trait LinkLocal {
    fn is_unicast_link_local_v6(&self) -> bool;
}
impl LinkLocal for IpAddr {
    fn is_unicast_link_local_v6(&self) -> bool {
        matches!(self, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80)
    }
}

/// The local address the kernel would use to reach `dest` (a UDP connect sends nothing).
pub(crate) fn local_ip_towards(dest: SocketAddr) -> Result<IpAddr> {
    let any: SocketAddr = if dest.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal")
    } else {
        "[::]:0".parse().expect("literal")
    };
    let sock = UdpSocket::bind(any).map_err(|e| Error::io("binding a probe socket", e))?;
    sock.connect(dest)
        .map_err(|e| Error::io(format!("finding the route to {dest}"), e))?;
    Ok(sock
        .local_addr()
        .map_err(|e| Error::io("reading the probe socket address", e))?
        .ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_found_by_name() {
        assert!(pick_interface(Some("lo")).unwrap().is_loopback());
        assert!(pick_interface(Some("=no-such-if")).is_err());
    }
}
