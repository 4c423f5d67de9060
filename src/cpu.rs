//! What this CPU is, for the host-memory choices that depend on it.
//!
//! Two CPUs of "the same kind" differ (a 2-core AMD EPYC with 1 MiB of L2 per core
//! and 32 MiB of L3, the next one with 512 KiB and 8 MiB), so nothing here is a
//! constant fitted on one of them:
//! - cache sizes come from the kernel (`/sys/devices/system/cpu/cpu0/cache`), and
//!   the block sizes of receive-and-reduce follow them ([`Tuning`]);
//! - whether non-temporal stores pay for a collective's output is measured once per
//!   process, at the first copy that could use them ([`streaming_pays`]): both
//!   copies run over buffers larger than the last-level cache and the faster wins.
//!   `MIXCCL_NT_STORES=on|off` forces the choice (`auto` by default).
//!
//! Every choice is logged once at INFO, with where it came from.

use crate::debug::log_info;
use std::sync::OnceLock;
use std::time::Instant;

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

/// sysfs sizes: `48K`, `1024K`, `32768K`, `2M`, or bytes.
fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let (digits, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => s.split_at(i),
        None => (s, ""),
    };
    let n: usize = digits.parse().ok()?;
    let shift = match unit.trim() {
        "" => 0,
        "K" | "k" => 10,
        "M" => 20,
        "G" => 30,
        _ => return None,
    };
    n.checked_mul(1 << shift).filter(|&n| n > 0)
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
}

impl Tuning {
    fn describe(&self) -> String {
        format!(
            "receive staging {} KiB per lane, reduce block {} KiB",
            self.staging_bytes >> 10,
            self.reduce_block >> 10
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
    }
}

/// This CPU's tuning.
pub(crate) fn tuning() -> Tuning {
    static TUNING: OnceLock<Tuning> = OnceLock::new();
    *TUNING.get_or_init(|| tuning_of(caches()))
}

/// `MIXCCL_NT_STORES`: how the non-temporal store choice is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NtStores {
    Auto,
    On,
    Off,
}

fn nt_stores_setting() -> NtStores {
    match std::env::var("MIXCCL_NT_STORES").as_deref().map(str::trim) {
        Err(_) | Ok("") | Ok("auto") => NtStores::Auto,
        Ok("1" | "on" | "yes" | "true") => NtStores::On,
        Ok("0" | "off" | "no" | "false") => NtStores::Off,
        Ok(other) => {
            crate::debug::log_warn!(
                None,
                "MIXCCL_NT_STORES={other:?} is not auto, on or off; using auto"
            );
            NtStores::Auto
        }
    }
}

/// Do non-temporal stores copy a collective's output faster than ordinary ones on
/// this CPU? Decided once per process: by `MIXCCL_NT_STORES`, else by
/// [`probe_streaming`].
pub(crate) fn streaming_pays() -> bool {
    static PAYS: OnceLock<bool> = OnceLock::new();
    *PAYS.get_or_init(|| match nt_stores_setting() {
        NtStores::On => true,
        NtStores::Off => false,
        NtStores::Auto => {
            let p = probe_streaming(caches());
            log_info!(
                None,
                "cpu: non-temporal stores {} for collective outputs (probe over {} MiB: \
                 ordinary {:.2} GB/s, non-temporal {:.2} GB/s, {:.1} ms)",
                if p.pays { "used" } else { "not used" },
                p.bytes >> 20,
                p.ordinary_gbps,
                p.streaming_gbps,
                p.took_ms
            );
            p.pays
        }
    })
}

/// What [`probe_streaming`] measured.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Probe {
    /// Bytes copied per pass.
    pub bytes: usize,
    /// Best rate of ordinary copies, GB/s.
    pub ordinary_gbps: f64,
    /// Best rate of non-temporal copies, GB/s.
    pub streaming_gbps: f64,
    /// Non-temporal stores won by at least 5%.
    pub pays: bool,
    /// Wall time of the whole probe.
    pub took_ms: f64,
}

/// Copies a buffer one and a half times the last-level cache (8-48 MiB) both ways,
/// alternating, three passes each after a warm-up, and keeps the best of each (the
/// best resists other load on the machine): the destination of a large collective
/// is not in cache, which is when the choice matters. About 30-100 ms, once per
/// process, and only in a process whose all-gathers copy large blocks.
pub(crate) fn probe_streaming(c: Caches) -> Probe {
    let start = Instant::now();
    let bytes = (c.llc + c.llc / 2).clamp(8 << 20, 48 << 20);
    let src = vec![0x5au8; bytes];
    let mut dst = vec![0u8; bytes];
    dst.copy_from_slice(&src);
    let mut best = [f64::MAX; 2];
    for _ in 0..3 {
        for (i, streaming) in [false, true].into_iter().enumerate() {
            let t = Instant::now();
            if streaming {
                crate::copy::copy_nontemporal(&mut dst, &src);
            } else {
                dst.copy_from_slice(&src);
            }
            best[i] = best[i].min(t.elapsed().as_secs_f64());
            std::hint::black_box(&dst);
        }
    }
    let gbps = |s: f64| bytes as f64 / s.max(1e-9) / 1e9;
    let (ordinary_gbps, streaming_gbps) = (gbps(best[0]), gbps(best[1]));
    Probe {
        bytes,
        ordinary_gbps,
        streaming_gbps,
        pays: cfg!(target_arch = "x86_64") && streaming_gbps > ordinary_gbps * 1.05,
        took_ms: start.elapsed().as_secs_f64() * 1e3,
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
                reduce_block: 16 << 10
            }
        );
        assert_eq!(at(48 << 10, 512 << 10).staging_bytes, 128 << 10);
        assert_eq!(at(48 << 10, 512 << 10).reduce_block, 16 << 10);
        assert_eq!(at(48 << 10, 1280 << 10).staging_bytes, 256 << 10);
        // Bounded both ways.
        assert_eq!(at(1 << 10, 16 << 10), at(4 << 10, 64 << 10));
        assert_eq!(at(32 << 20, 64 << 20).staging_bytes, 1 << 20);
        assert_eq!(at(32 << 20, 64 << 20).reduce_block, 64 << 10);
    }

    #[test]
    fn the_probe_measures_both_copies() {
        let p = probe_streaming(Caches::DEFAULT);
        eprintln!("{p:?}");
        assert_eq!(p.bytes, 12 << 20);
        assert!(p.ordinary_gbps > 0.0 && p.streaming_gbps > 0.0, "{p:?}");
        assert_eq!(
            p.pays,
            cfg!(target_arch = "x86_64") && p.streaming_gbps > p.ordinary_gbps * 1.05
        );
    }
}
