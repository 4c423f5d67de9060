//! What this CPU is, for the host-memory choices that depend on it.
//!
//! Two CPUs of "the same kind" differ (a 2-core AMD EPYC with 1 MiB of L2 per core
//! and 32 MiB of L3, the next one with 512 KiB and 8 MiB), so nothing here is a
//! constant fitted on one of them:
//! - cache sizes come from the kernel (`/sys/devices/system/cpu/cpu0/cache`), and
//!   the block sizes of receive-and-reduce, the socket buffers to peers on this host
//!   and the rings of the host's board follow them ([`Tuning`]);
//! - non-temporal stores for a collective's large outputs are on (x86-64) unless
//!   `MIXCCL_NT_STORES=0`: a probe of copy rates was tried and chose wrong
//!   ([`streaming_pays`]).
//!
//! Every choice is logged once at INFO, with where it came from.

use crate::debug::{log_info, log_warn};
use std::sync::OnceLock;

/// Cache sizes of the CPU this process runs on, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Caches {
    /// Level-1 data cache of one core.
    pub l1d: usize,
    /// Level-2 cache of one core.
    pub l2: usize,
    /// Last-level (L3, else L2) cache, as shared.
    pub llc: usize,
    /// Read from sysfs (false: the conservative defaults below).
    pub from_sysfs: bool,
}

impl Caches {
    /// Sizes for a CPU the kernel says nothing about: small ones, so blocks fit.
    const DEFAULT: Caches = Caches {
        l1d: 32 << 10,
        l2: 512 << 10,
        llc: 8 << 20,
        from_sysfs: false,
    };
}

/// The caches of cpu0, read once.
pub(crate) fn caches() -> Caches {
    static CACHES: OnceLock<Caches> = OnceLock::new();
    *CACHES.get_or_init(|| {
        let c = read_caches(std::path::Path::new("/sys/devices/system/cpu/cpu0/cache"))
            .unwrap_or(Caches::DEFAULT);
        log_info!(
            None,
            "cpu: L1d {} KiB, L2 {} KiB, last level {} KiB ({}); {}",
            c.l1d >> 10,
            c.l2 >> 10,
            c.llc >> 10,
            if c.from_sysfs {
                "sysfs"
            } else {
                "not in sysfs: defaults"
            },
            tuning_of(c).describe()
        );
        c
    })
}

/// Reads `index*/{level,type,size}` under `dir`; None when no data or unified
/// cache of level 1 or 2 is listed.
fn read_caches(dir: &std::path::Path) -> Option<Caches> {
    let (mut l1d, mut l2, mut l3) = (None, None, None);
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let p = entry.path();
        let read = |f: &str| std::fs::read_to_string(p.join(f)).ok();
        let (Some(level), Some(kind), Some(size)) = (read("level"), read("type"), read("size"))
        else {
            continue;
        };
        let Some(size) = parse_size(&size) else {
            continue;
        };
        match (level.trim(), kind.trim()) {
            ("1", "Data") => l1d = Some(size),
            ("2", "Unified" | "Data") => l2 = Some(size),
            ("3", "Unified") => l3 = Some(size),
            _ => {}
        }
    }
    let (l1d, l2) = (l1d?, l2?);
    Some(Caches {
        l1d,
        l2,
        llc: l3.unwrap_or(l2).max(l2),
        from_sysfs: true,
    })
}

/// A sysfs cache size (`48K`, `32768K`, `2M`, or bytes); a zero size is none.
fn parse_size(s: &str) -> Option<usize> {
    crate::config::parse_bytes(s).filter(|&n| n > 0)
}

/// The block sizes that follow the caches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tuning {
    /// Bytes of staging per lane for receive-and-reduce: a quarter of L2, so the
    /// staged block and the block it is reduced into stay in L2 with room to spare.
    pub staging_bytes: usize,
    /// Bytes per step of an out-of-place receive-and-reduce (copy, then reduce):
    /// half of L1d, so the block is still in L1 for the second pass.
    pub reduce_block: usize,
    /// SO_SNDBUF/SO_RCVBUF of TCP sockets to peers on this host
    /// (`MIXCCL_SOCKET_BUFFER=0`): a core's L2, so what a sender has queued is still
    /// in a cache when the receiver copies it out. Measured with loopback congestion
    /// control without pacing (`transport::tcp::mesh::LOCAL_CONGESTION`), 4 ranks,
    /// 32 MiB all-reduce on a 2-core EPYC with 1 MiB of L2 (docs/performance.md,
    /// "Loopback sockets without pacing"): 512 KiB and 1 MiB ran 1.2x 64 KiB (the
    /// previous choice, fitted while the kernel's default `bbr` paced the sockets)
    /// and 2 MiB and 4 MiB fell back.
    pub local_socket_buffer: usize,
    /// Bytes of each rank's ring in the host's board (`MIXCCL_BOARD_BYTES=auto`): a
    /// sixteenth of the last-level cache, 1-8 MiB, the same on every rank of the host
    /// (the board is only made when all are on it). Measured on a 2-core EPYC with
    /// 32 MiB of L3 (docs/performance.md, "The host's board follows the last-level
    /// cache"): 2 MiB rings ran the 32 MiB all-gather 1.18x the old 8 MiB at 4 ranks
    /// and 1.2x at 2, level at 8; 512 KiB ran it at 0.68x.
    pub board_bytes: usize,
}

impl Tuning {
    fn describe(&self) -> String {
        format!(
            "receive staging {} KiB per lane, reduce block {} KiB, socket buffers to this \
             host {} KiB, board rings {} KiB",
            self.staging_bytes >> 10,
            self.reduce_block >> 10,
            self.local_socket_buffer >> 10,
            self.board_bytes >> 10
        )
    }
}

/// The tuning for `c` (powers of two, bounded so no cache report can make a lane's
/// staging tiny or huge).
pub(crate) fn tuning_of(c: Caches) -> Tuning {
    let pow2 = |x: usize| {
        if x.is_power_of_two() {
            x
        } else {
            x.next_power_of_two() / 2
        }
    };
    Tuning {
        staging_bytes: pow2(c.l2 / 4).clamp(64 << 10, 1 << 20),
        reduce_block: pow2(c.l1d / 2).clamp(4 << 10, 64 << 10),
        local_socket_buffer: pow2(c.l2).clamp(256 << 10, 2 << 20),
        board_bytes: pow2(c.llc / 16).clamp(1 << 20, 8 << 20),
    }
}

/// This CPU's tuning.
pub(crate) fn tuning() -> Tuning {
    static TUNING: OnceLock<Tuning> = OnceLock::new();
    *TUNING.get_or_init(|| tuning_of(caches()))
}

/// Are non-temporal stores used for a collective's large output copies? Yes on
/// x86-64 unless `MIXCCL_NT_STORES=0` (read once per process, a flag like the others).
///
/// Not probed: a single-thread probe (ordinary against non-temporal copies over 1.5x
/// the last-level cache) preferred ordinary copies here (24 against 14 GB/s) while the
/// 4-rank all-gather it decides ran 15-40% faster with non-temporal stores
/// (docs/performance.md, "Choices that follow the CPU"): what a copy costs alone says
/// little of what it costs beside the other ranks' copies on the same memory.
pub(crate) fn streaming_pays() -> bool {
    static PAYS: OnceLock<bool> = OnceLock::new();
    *PAYS.get_or_init(|| {
        let on =
            nt_stores_from(crate::config::env("MIXCCL_NT_STORES").as_deref()).unwrap_or_else(|e| {
                log_warn!(None, "{e}; non-temporal stores stay on");
                true
            }) && cfg!(target_arch = "x86_64");
        log_info!(
            None,
            "cpu: non-temporal stores {} for large collective outputs",
            if on { "used" } else { "not used" }
        );
        on
    })
}

/// `MIXCCL_NT_STORES`'s value: 1 (also unset or blank) or 0, as every flag is read.
fn nt_stores_from(v: Option<&str>) -> crate::error::Result<bool> {
    match v.filter(|v| !v.trim().is_empty()) {
        None => Ok(true),
        Some(v) => crate::config::parse_flag("MIXCCL_NT_STORES", v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysfs_sizes_parse() {
        assert_eq!(parse_size("48K\n"), Some(48 << 10));
        assert_eq!(parse_size("32768K"), Some(32 << 20));
        assert_eq!(parse_size("2M"), Some(2 << 20));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("0K"), None);
        assert_eq!(parse_size("12Q"), None);
        assert_eq!(parse_size(""), None);
    }

    fn fake_cache(dir: &std::path::Path, index: u32, level: u32, kind: &str, size: &str) {
        let d = dir.join(format!("index{index}"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("level"), format!("{level}\n")).unwrap();
        std::fs::write(d.join("type"), format!("{kind}\n")).unwrap();
        std::fs::write(d.join("size"), format!("{size}\n")).unwrap();
    }

    #[test]
    fn caches_are_read_from_a_sysfs_tree() {
        let dir = std::env::temp_dir().join(format!("mixccl-cpu-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        fake_cache(&dir, 0, 1, "Data", "32K");
        fake_cache(&dir, 1, 1, "Instruction", "32K");
        fake_cache(&dir, 2, 2, "Unified", "512K");
        fake_cache(&dir, 3, 3, "Unified", "8192K");
        let c = read_caches(&dir).unwrap();
        assert_eq!(
            (c.l1d, c.l2, c.llc, c.from_sysfs),
            (32 << 10, 512 << 10, 8 << 20, true)
        );
        // No L3: the L2 is the last level.
        std::fs::remove_dir_all(dir.join("index3")).unwrap();
        assert_eq!(read_caches(&dir).unwrap().llc, 512 << 10);
        // No L2: nothing to go by.
        std::fs::remove_dir_all(dir.join("index2")).unwrap();
        assert_eq!(read_caches(&dir), None);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(read_caches(&dir), None);
    }

    #[test]
    fn tuning_follows_the_caches_within_bounds() {
        let at = |l1d: usize, l2: usize| {
            tuning_of(Caches {
                l1d,
                l2,
                llc: 8 << 20,
                from_sysfs: true,
            })
        };
        // The CPU the constants were first fitted on: the same values as before.
        assert_eq!(
            at(32 << 10, 1 << 20),
            Tuning {
                staging_bytes: 256 << 10,
                reduce_block: 16 << 10,
                local_socket_buffer: 1 << 20,
                board_bytes: 1 << 20,
            }
        );
        // The board follows the last-level cache: a sixteenth, 1-8 MiB.
        let board = |llc: usize| {
            tuning_of(Caches {
                l1d: 32 << 10,
                l2: 1 << 20,
                llc,
                from_sysfs: true,
            })
            .board_bytes
        };
        assert_eq!(board(32 << 20), 2 << 20);
        assert_eq!(board(48 << 20), 2 << 20);
        assert_eq!(board(8 << 20), 1 << 20);
        assert_eq!(board(256 << 20), 8 << 20);
        assert_eq!(at(48 << 10, 512 << 10).local_socket_buffer, 512 << 10);
        assert_eq!(at(48 << 10, 1280 << 10).local_socket_buffer, 1 << 20);
        assert_eq!(at(48 << 10, 512 << 10).staging_bytes, 128 << 10);
        assert_eq!(at(48 << 10, 512 << 10).reduce_block, 16 << 10);
        assert_eq!(at(48 << 10, 1280 << 10).staging_bytes, 256 << 10);
        // Bounded both ways.
        assert_eq!(at(1 << 10, 16 << 10), at(4 << 10, 64 << 10));
        assert_eq!(at(32 << 20, 64 << 20).staging_bytes, 1 << 20);
        assert_eq!(at(32 << 20, 64 << 20).reduce_block, 64 << 10);
        assert_eq!(at(1 << 10, 16 << 10).local_socket_buffer, 256 << 10);
        assert_eq!(at(32 << 20, 64 << 20).local_socket_buffer, 2 << 20);
    }

    #[test]
    fn nt_stores_setting_parses() {
        assert!(nt_stores_from(None).unwrap());
        assert!(nt_stores_from(Some(" ")).unwrap());
        assert!(nt_stores_from(Some("1")).unwrap());
        assert!(!nt_stores_from(Some(" 0 ")).unwrap());
        assert!(!nt_stores_from(Some("no")).unwrap());
        let e = nt_stores_from(Some("auto")).unwrap_err().to_string();
        assert!(e.contains("MIXCCL_NT_STORES") && e.contains("auto"), "{e}");
    }
}
