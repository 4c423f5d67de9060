//! Long links: socket buffers sized from the bandwidth-delay product, so that the
//! `nsocks` streams to a peer a long round trip away keep its pipe full.
//!
//! The sockets are made before `comm::measure` runs, and a receive window is best
//! set before data flows, so the product comes from what is known at connect time:
//! the round trip is the kernel's estimate from the TCP handshake (`TCP_INFO`), the
//! rate the local interface's link speed (`/sys/class/net/<if>/speed`; 10 Gbit/s
//! when the driver reports none). Each of the `nsocks` streams gets twice its share
//! of the product (a window must cover a round trip plus the time to drain it).
//! Where the kernel's autotuning ceiling (`tcp_rmem`/`tcp_wmem` maxima) already
//! covers that, the socket keeps autotuning (0), which grows buffers only as far
//! as the connection needs; above it the buffers are set (SO_*BUFFORCE where
//! privileged), at most [`MAX_BUFFER`]. `MIXCCL_SOCKET_BUFFER` overrides all this.
//!
//! Example: 1 Gbit/s with 20 ms round trip is 2.5 MB; two streams want 2.5 MB
//! each, under Linux's default 4 MiB send / 6 MiB receive ceilings: autotuning
//! stays. 10 Gbit/s at 20 ms wants 25 MB per stream: the buffers are set.

use crate::sys;
use std::net::TcpStream;
use std::time::Duration;

/// The largest buffer set from the product (per socket and direction).
pub(crate) const MAX_BUFFER: usize = 256 << 20;

/// The link rate assumed when the interface reports none, bytes/s.
const DEFAULT_RATE: f64 = 10e9 / 8.0;

/// The buffer for one of `streams` sockets to a peer `rtt` away at `rate` bytes/s,
/// given the kernel's autotuning ceiling `autotune_max` (0: leave autotuning on).
pub(crate) fn buffer_for(rtt: Duration, rate: f64, streams: usize, autotune_max: usize) -> usize {
    let bdp = rate * rtt.as_secs_f64();
    let want = (2.0 * bdp / streams.max(1) as f64).ceil() as usize;
    if want <= autotune_max {
        0
    } else {
        want.min(MAX_BUFFER)
    }
}

/// The smaller of the kernel's send and receive autotuning maxima (third field of
/// `net.ipv4.tcp_wmem` / `tcp_rmem`); 4 MiB when unreadable.
fn autotune_max() -> usize {
    let max = |f: &str| {
        std::fs::read_to_string(f)
            .ok()
            .and_then(|t| t.split_whitespace().nth(2)?.parse::<usize>().ok())
    };
    match (
        max("/proc/sys/net/ipv4/tcp_wmem"),
        max("/proc/sys/net/ipv4/tcp_rmem"),
    ) {
        (Some(w), Some(r)) => w.min(r),
        _ => 4 << 20,
    }
}

/// The link speed of the interface that holds `s`'s local address, bytes/s.
fn local_rate(s: &TcpStream) -> f64 {
    let Ok(local) = s.local_addr() else {
        return DEFAULT_RATE;
    };
    let name = sys::interfaces()
        .ok()
        .and_then(|ifs| ifs.into_iter().find(|i| i.ip == local.ip()).map(|i| i.name));
    name.and_then(|n| std::fs::read_to_string(format!("/sys/class/net/{n}/speed")).ok())
        .and_then(|t| t.trim().parse::<i64>().ok())
        .filter(|&mbps| mbps > 0)
        .map_or(DEFAULT_RATE, |mbps| mbps as f64 * 1e6 / 8.0)
}

/// The buffer for socket `s`, one of `streams` to its peer (0: autotuning).
pub(crate) fn buffer_for_socket(s: &TcpStream, streams: usize) -> usize {
    let Ok(rtt) = sys::tcp_rtt(s) else { return 0 };
    buffer_for(rtt, local_rate(s), streams, autotune_max())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_follow_the_bandwidth_delay_product() {
        let ms = Duration::from_millis;
        // 1 Gbit/s, 20 ms, 2 streams: 2 x 2.5 MB / 2 = 2.5 MB, under a 4 MiB ceiling.
        assert_eq!(buffer_for(ms(20), 125e6, 2, 4 << 20), 0);
        // Under a 1 MiB ceiling it is set: 2 * 125e6 * 0.02 / 2.
        assert_eq!(buffer_for(ms(20), 125e6, 2, 1 << 20), 2_500_000);
        // 10 Gbit/s, 20 ms, 2 streams: 25 MB each.
        assert_eq!(buffer_for(ms(20), 1.25e9, 2, 4 << 20), 25_000_000);
        // Capped, and a LAN's microseconds change nothing.
        assert_eq!(buffer_for(ms(1000), 1.25e9, 1, 4 << 20), MAX_BUFFER);
        assert_eq!(buffer_for(Duration::from_micros(50), 1.25e9, 2, 4 << 20), 0);
    }

    #[test]
    fn a_loopback_socket_keeps_autotuning() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let s = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let rtt = sys::tcp_rtt(&s).unwrap();
        assert!(rtt < Duration::from_millis(100), "loopback rtt {rtt:?}");
        assert_eq!(buffer_for_socket(&s, 2), 0);
    }
}
