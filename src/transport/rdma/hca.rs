//! `MIXCCL_IB_HCA`: which devices and ports to use, in NCCL_IB_HCA's syntax.
//! `mlx5_0:1,mlx5_1` = device-name prefixes, each optionally with a port;
//! `^mlx5_2` = every device but these; `=mlx5_0` = exact names only (also `^=`).

/// A parsed `MIXCCL_IB_HCA` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HcaFilter {
    exclude: bool,
    exact: bool,
    entries: Vec<(String, Option<u8>)>,
}

impl HcaFilter {
    /// Parses the spec; `None` or blank selects everything. Bad port numbers are
    /// an error naming the variable.
    pub(crate) fn parse(spec: Option<&str>) -> Result<HcaFilter, String> {
        let spec = spec.unwrap_or("").trim();
        let (exclude, rest) = match spec.strip_prefix('^') {
            Some(r) => (true, r),
            None => (false, spec),
        };
        let (exact, rest) = match rest.strip_prefix('=') {
            Some(r) => (true, r),
            None => (false, rest),
        };
        let mut entries = Vec::new();
        for item in rest.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (name, port) = match item.split_once(':') {
                Some((n, p)) => {
                    let port = p
                        .trim()
                        .parse::<u8>()
                        .ok()
                        .filter(|p| *p > 0)
                        .ok_or_else(|| {
                            format!("MIXCCL_IB_HCA={spec:?}: bad port {p:?} (expected 1..255)")
                        })?;
                    (n.trim(), Some(port))
                }
                None => (item, None),
            };
            entries.push((name.to_string(), port));
        }
        Ok(HcaFilter {
            exclude,
            exact,
            entries,
        })
    }

    /// Is port `port` of device `device` selected?
    pub(crate) fn selects(&self, device: &str, port: u8) -> bool {
        if self.entries.is_empty() {
            return true;
        }
        let hit = self.entries.iter().any(|(name, p)| {
            let name_ok = if self.exact {
                device == name
            } else {
                device.starts_with(name.as_str())
            };
            name_ok && p.map_or(true, |p| p == port)
        });
        hit != self.exclude
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(s: &str) -> HcaFilter {
        HcaFilter::parse(Some(s)).unwrap()
    }

    #[test]
    fn nccl_ib_hca_syntax() {
        assert!(f("").selects("mlx5_0", 1));
        assert!(HcaFilter::parse(None).unwrap().selects("anything", 2));
        let s = f("mlx5_0:1,mlx5_1");
        assert!(s.selects("mlx5_0", 1));
        assert!(!s.selects("mlx5_0", 2));
        assert!(s.selects("mlx5_1", 2));
        assert!(s.selects("mlx5_10", 1), "names are prefixes by default");
        assert!(!s.selects("mlx5_2", 1));
        let x = f("^mlx5_2");
        assert!(x.selects("mlx5_0", 1));
        assert!(!x.selects("mlx5_2", 1));
        let e = f("=mlx5_1");
        assert!(e.selects("mlx5_1", 1));
        assert!(!e.selects("mlx5_10", 1));
        let ne = f("^=mlx5_1:2");
        assert!(ne.selects("mlx5_1", 1));
        assert!(!ne.selects("mlx5_1", 2));
        assert!(ne.selects("mlx5_10", 2));
    }

    #[test]
    fn bad_ports_are_errors() {
        for s in ["mlx5_0:x", "mlx5_0:0", "mlx5_0:300"] {
            let e = HcaFilter::parse(Some(s)).unwrap_err();
            assert!(e.contains("MIXCCL_IB_HCA"), "{e}");
        }
    }
}
