//! NCCL's syntax for choosing devices by name, parsed once for every variable that
//! uses it (`MIXCCL_SOCKET_IFNAME` for TCP interfaces, `MIXCCL_IB_HCA` for RDMA
//! devices): a comma list of name prefixes (`eth,ib`); a leading `^` selects all
//! but these (`^docker,lo`); a leading `=` (after `^` if both) makes names exact
//! (`=eth0`, `^=mlx5_1`); where the variable has ports, `name:port` narrows an entry
//! to one port (`mlx5_0:1`).

/// A parsed name filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NameFilter {
    exclude: bool,
    exact: bool,
    entries: Vec<(String, Option<u8>)>,
}

impl NameFilter {
    /// Parses `spec`, the value of `var`. With `ports`, `name:port` entries are read
    /// (a bad port is an error naming `var`); without, a `:` is part of the name.
    pub(crate) fn parse(var: &str, spec: &str, ports: bool) -> Result<NameFilter, String> {
        let spec = spec.trim();
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
            let (name, port) = match item.split_once(':').filter(|_| ports) {
                Some((n, p)) => {
                    let port = p
                        .trim()
                        .parse::<u8>()
                        .ok()
                        .filter(|p| *p > 0)
                        .ok_or_else(|| {
                            format!("{var}={spec:?}: bad port {p:?} (expected 1..255)")
                        })?;
                    (n.trim(), Some(port))
                }
                None => (item, None),
            };
            entries.push((name.to_string(), port));
        }
        Ok(NameFilter {
            exclude,
            exact,
            entries,
        })
    }

    /// The filter names nothing (a blank spec, or only `^` / `=`).
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Does the filter select port `port` of `name` (`None`: any port)? An empty
    /// filter selects nothing, or everything when it excludes.
    pub(crate) fn selects(&self, name: &str, port: Option<u8>) -> bool {
        let hit = self.entries.iter().any(|(n, p)| {
            let name_ok = if self.exact {
                name == n
            } else {
                name.starts_with(n.as_str())
            };
            name_ok
                && match (p, port) {
                    (Some(p), Some(port)) => *p == port,
                    _ => true,
                }
        });
        hit != self.exclude
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(spec: &str) -> NameFilter {
        NameFilter::parse("MIXCCL_SOCKET_IFNAME", spec, false).unwrap()
    }

    fn ports(spec: &str) -> NameFilter {
        NameFilter::parse("MIXCCL_IB_HCA", spec, true).unwrap()
    }

    #[test]
    fn prefixes_exclusion_and_exact_names() {
        let m = |spec: &str, name: &str| names(spec).selects(name, None);
        assert!(m("eth", "eth0"));
        assert!(m("ib,eth", "eth1"));
        assert!(m(" ib , eth ", "eth1"), "entries are trimmed");
        assert!(!m("ib", "eth0"));
        assert!(m("^docker", "eth0"));
        assert!(!m("^docker,lo", "lo"));
        assert!(m("=lo", "lo"));
        assert!(!m("=eth", "eth0"));
        assert!(!m("^=eth0", "eth0"));
        assert!(m("^=eth0", "eth01"));
        assert!(!m(",", "eth0"), "an empty list selects nothing");
        assert!(m("^", "eth0"), "excluding nothing selects everything");
    }

    #[test]
    fn colons_are_names_without_ports() {
        let f = names("eth0:1");
        assert!(f.selects("eth0:1", None));
        assert!(!f.selects("eth0", None));
    }

    #[test]
    fn ports_narrow_an_entry() {
        let f = ports("mlx5_0:1,mlx5_1");
        assert!(f.selects("mlx5_0", Some(1)));
        assert!(!f.selects("mlx5_0", Some(2)));
        assert!(f.selects("mlx5_1", Some(2)));
        assert!(
            f.selects("mlx5_10", Some(1)),
            "names are prefixes by default"
        );
        assert!(!f.selects("mlx5_2", Some(1)));
        let ne = ports("^=mlx5_1:2");
        assert!(ne.selects("mlx5_1", Some(1)));
        assert!(!ne.selects("mlx5_1", Some(2)));
        assert!(ne.selects("mlx5_10", Some(2)));
        assert!(ports("").is_empty());
    }

    #[test]
    fn bad_ports_name_the_variable() {
        for s in ["mlx5_0:x", "mlx5_0:0", "mlx5_0:300"] {
            let e = NameFilter::parse("MIXCCL_IB_HCA", s, true).unwrap_err();
            assert!(e.starts_with("MIXCCL_IB_HCA="), "{e}");
            assert!(e.contains("bad port"), "{e}");
        }
    }
}
