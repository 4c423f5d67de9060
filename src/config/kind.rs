//! How one kind of setting is read from its variable, shown, and range-checked:
//! the column of the parameter table that says what a value may be.

use super::{parse_bytes, AlgoOverride, NetTransport, TlsPolicy};
use crate::debug::DebugLevel;
use crate::error::{Error, Result};
use std::path::PathBuf;
use std::time::Duration;

/// The error for a variable whose value is not what its kind takes.
fn bad(var: &str, v: &str, want: &str) -> Error {
    Error::invalid(format!("{var}={v:?}: expected {want}"))
}

/// A kind of setting: parses a variable's text, prints a value back, and says which
/// values are allowed.
pub(crate) trait Kind {
    /// The field's type in `Config`.
    type Value;
    /// The value of `var`'s text `v`, or an error naming `var` and what it takes.
    fn parse(&self, var: &str, v: &str) -> Result<Self::Value>;
    /// The value as `describe` and the must-agree check print it.
    fn show(&self, v: &Self::Value) -> String;
    /// The value as README's table writes it (sizes with K/M/G).
    fn doc(&self, v: &Self::Value) -> String {
        self.show(v)
    }
    /// The values allowed, in words.
    fn allowed(&self) -> String;
    /// Whether a value set by hand (not parsed) is allowed; `Config::validate` asks.
    fn check(&self, _v: &Self::Value) -> bool {
        true
    }
    /// Whether an empty (or blank) variable means the default rather than an error.
    fn empty_is_default(&self) -> bool {
        false
    }
}

/// A positive, finite number of seconds.
pub(crate) struct Seconds;

impl Kind for Seconds {
    type Value = Duration;
    fn parse(&self, var: &str, v: &str) -> Result<Duration> {
        v.trim()
            .parse()
            .ok()
            .filter(|s: &f64| *s > 0.0 && s.is_finite())
            .map(Duration::from_secs_f64)
            .ok_or_else(|| bad(var, v, &self.allowed()))
    }
    fn show(&self, v: &Duration) -> String {
        v.as_secs_f64().to_string()
    }
    fn allowed(&self) -> String {
        "a positive number of seconds".into()
    }
    fn check(&self, v: &Duration) -> bool {
        !v.is_zero()
    }
}

/// A whole number of microseconds.
pub(crate) struct Micros;

impl Kind for Micros {
    type Value = Duration;
    fn parse(&self, var: &str, v: &str) -> Result<Duration> {
        v.trim()
            .parse()
            .map(Duration::from_micros)
            .map_err(|_| bad(var, v, &self.allowed()))
    }
    fn show(&self, v: &Duration) -> String {
        v.as_micros().to_string()
    }
    fn allowed(&self) -> String {
        "microseconds".into()
    }
}

/// A byte count with an optional K/M/G suffix, in `min..=max` (or 0 where `zero`),
/// rounded up to a multiple of `round`.
pub(crate) struct Size {
    /// The smallest size allowed (besides 0 where `zero`).
    pub min: usize,
    /// The largest size allowed.
    pub max: usize,
    /// Whether 0 is allowed too (meaning "off").
    pub zero: bool,
    /// Parsed sizes are rounded up to a multiple of this.
    pub round: usize,
}

impl Size {
    /// Any size.
    pub const ANY: Size = Size::range(0, usize::MAX);

    /// Sizes in `min..=max`, not rounded.
    pub const fn range(min: usize, max: usize) -> Size {
        Size {
            min,
            max,
            zero: false,
            round: 1,
        }
    }
}

/// `b` as README writes sizes: `512K`, `8M`, `1G`, `100`.
pub(crate) fn fmt_bytes(b: usize) -> String {
    match b {
        0 => "0".into(),
        b if b % (1 << 30) == 0 => format!("{}G", b >> 30),
        b if b % (1 << 20) == 0 => format!("{}M", b >> 20),
        b if b % (1 << 10) == 0 => format!("{}K", b >> 10),
        b => b.to_string(),
    }
}

impl Kind for Size {
    type Value = usize;
    fn parse(&self, var: &str, v: &str) -> Result<usize> {
        parse_bytes(v)
            .filter(|b| self.check(b))
            .map(|b| b.div_ceil(self.round) * self.round)
            .ok_or_else(|| bad(var, v, &self.allowed()))
    }
    fn show(&self, v: &usize) -> String {
        v.to_string()
    }
    fn doc(&self, v: &usize) -> String {
        fmt_bytes(*v)
    }
    fn allowed(&self) -> String {
        let range = match (self.min, self.max) {
            (0, usize::MAX) => "a size".to_string(),
            (min, usize::MAX) => format!("a size of at least {min} bytes"),
            (min, max) => format!("a size from {} to {}", fmt_bytes(min), fmt_bytes(max)),
        };
        if self.zero {
            format!("0, or {range}")
        } else {
            range
        }
    }
    fn check(&self, v: &usize) -> bool {
        (self.zero && *v == 0) || (self.min..=self.max).contains(v)
    }
}

/// A [`Size`], or `auto` (`None`): chosen where it is used, from the CPU.
pub(crate) struct SizeOrAuto(pub Size);

impl Kind for SizeOrAuto {
    type Value = Option<usize>;
    fn parse(&self, var: &str, v: &str) -> Result<Option<usize>> {
        if v.trim().eq_ignore_ascii_case("auto") {
            return Ok(None);
        }
        self.0
            .parse(var, v)
            .map(Some)
            .map_err(|_| bad(var, v, &self.allowed()))
    }
    fn show(&self, v: &Option<usize>) -> String {
        v.map_or("auto".into(), |b| b.to_string())
    }
    fn doc(&self, v: &Option<usize>) -> String {
        v.map_or("auto".into(), fmt_bytes)
    }
    fn allowed(&self) -> String {
        format!("auto, {}", self.0.allowed())
    }
    fn check(&self, v: &Option<usize>) -> bool {
        v.map_or(true, |b| self.0.check(&b))
    }
    fn empty_is_default(&self) -> bool {
        true
    }
}

/// An integer in `min..=max`.
pub(crate) struct Int<T> {
    /// The smallest value allowed.
    pub min: T,
    /// The largest value allowed.
    pub max: T,
}

impl<T> Kind for Int<T>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
{
    type Value = T;
    fn parse(&self, var: &str, v: &str) -> Result<T> {
        v.trim()
            .parse()
            .ok()
            .filter(|n| self.check(n))
            .ok_or_else(|| bad(var, v, &self.allowed()))
    }
    fn show(&self, v: &T) -> String {
        v.to_string()
    }
    fn allowed(&self) -> String {
        format!("an integer in {}..={}", self.min, self.max)
    }
    fn check(&self, v: &T) -> bool {
        *v >= self.min && *v <= self.max
    }
}

/// On or off: `1`/`true`/`yes` or `0`/`false`/`no`; empty means the default.
pub(crate) struct Flag;

impl Kind for Flag {
    type Value = bool;
    fn parse(&self, var: &str, v: &str) -> Result<bool> {
        match v.trim() {
            "1" | "true" | "yes" => Ok(true),
            "0" | "false" | "no" => Ok(false),
            _ => Err(bad(var, v, &self.allowed())),
        }
    }
    fn show(&self, v: &bool) -> String {
        u8::from(*v).to_string()
    }
    fn allowed(&self) -> String {
        "0 or 1".into()
    }
    fn empty_is_default(&self) -> bool {
        true
    }
}

/// Free text, kept as written; unset or blank is `None`, shown as `none`.
pub(crate) struct Text {
    /// What `None` is shown as (what happens without the variable).
    pub none: &'static str,
}

impl Kind for Text {
    type Value = Option<String>;
    fn parse(&self, _var: &str, v: &str) -> Result<Option<String>> {
        Ok(Some(v.to_string()))
    }
    fn show(&self, v: &Option<String>) -> String {
        v.as_deref().unwrap_or(self.none).to_string()
    }
    fn allowed(&self) -> String {
        "text".into()
    }
    fn empty_is_default(&self) -> bool {
        true
    }
}

/// A file path (trimmed); unset or blank is `None`.
pub(crate) struct Path;

impl Kind for Path {
    type Value = Option<PathBuf>;
    fn parse(&self, _var: &str, v: &str) -> Result<Option<PathBuf>> {
        Ok(Some(PathBuf::from(v.trim())))
    }
    fn show(&self, v: &Option<PathBuf>) -> String {
        v.as_ref()
            .map_or("unset".into(), |p| p.display().to_string())
    }
    fn allowed(&self) -> String {
        "a file path".into()
    }
    fn empty_is_default(&self) -> bool {
        true
    }
}

/// A log level: WARN, INFO or TRACE.
pub(crate) struct Level;

impl Kind for Level {
    type Value = DebugLevel;
    fn parse(&self, var: &str, v: &str) -> Result<DebugLevel> {
        DebugLevel::parse(v).ok_or_else(|| bad(var, v, &self.allowed()))
    }
    fn show(&self, v: &DebugLevel) -> String {
        v.name().into()
    }
    fn allowed(&self) -> String {
        "WARN, INFO or TRACE".into()
    }
}

/// The transport between hosts: IB, Socket, or empty/`auto`.
pub(crate) struct Net;

impl Kind for Net {
    type Value = NetTransport;
    fn parse(&self, var: &str, v: &str) -> Result<NetTransport> {
        match v.trim().to_ascii_uppercase().as_str() {
            "AUTO" => Ok(NetTransport::Auto),
            "IB" => Ok(NetTransport::Ib),
            "SOCKET" => Ok(NetTransport::Socket),
            _ => Err(bad(var, v, &self.allowed())),
        }
    }
    fn show(&self, v: &NetTransport) -> String {
        v.name().into()
    }
    fn allowed(&self) -> String {
        "IB or Socket".into()
    }
    fn empty_is_default(&self) -> bool {
        true
    }
}

/// Which links carry TLS: off, cross-pod, cross-host or all.
pub(crate) struct Tls;

impl Kind for Tls {
    type Value = TlsPolicy;
    fn parse(&self, var: &str, v: &str) -> Result<TlsPolicy> {
        match v.trim().to_ascii_lowercase().as_str() {
            "off" | "0" | "no" => Ok(TlsPolicy::Off),
            "cross-pod" => Ok(TlsPolicy::CrossPod),
            "cross-host" => Ok(TlsPolicy::CrossHost),
            "all" => Ok(TlsPolicy::All),
            _ => Err(bad(var, v, &self.allowed())),
        }
    }
    fn show(&self, v: &TlsPolicy) -> String {
        v.name().into()
    }
    fn allowed(&self) -> String {
        "off, cross-pod, cross-host or all".into()
    }
    fn empty_is_default(&self) -> bool {
        true
    }
}

/// Forced algorithms in the `MIXCCL_ALGO` syntax.
pub(crate) struct Algos;

impl Kind for Algos {
    type Value = AlgoOverride;
    fn parse(&self, _var: &str, v: &str) -> Result<AlgoOverride> {
        AlgoOverride::parse(v)
    }
    fn show(&self, v: &AlgoOverride) -> String {
        if v.rules.is_empty() {
            return "auto".into();
        }
        v.rules
            .iter()
            .map(|(c, a)| c.map_or_else(|| a.to_string(), |c| format!("{c}:{a}")))
            .collect::<Vec<_>>()
            .join(";")
    }
    fn allowed(&self) -> String {
        format!(
            "`collective:algorithm;...` or one algorithm ({})",
            crate::call::Algorithm::names()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_print_as_readme_writes_them() {
        assert_eq!(fmt_bytes(512 << 10), "512K");
        assert_eq!(fmt_bytes(8 << 20), "8M");
        assert_eq!(fmt_bytes(1 << 30), "1G");
        assert_eq!(fmt_bytes(1536), "1536");
        assert_eq!(fmt_bytes(0), "0");
        let board = Size {
            min: 64 << 10,
            max: 1 << 30,
            zero: true,
            round: 64,
        };
        assert_eq!(board.allowed(), "0, or a size from 64K to 1G");
        assert_eq!(board.parse("V", "65537").unwrap(), 65600);
        assert_eq!(board.parse("V", "0").unwrap(), 0);
        assert!(board.parse("V", "1K").is_err());
        assert!(!board.check(&(2 << 30)));
    }
}
