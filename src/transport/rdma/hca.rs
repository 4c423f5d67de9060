//! `MIXCCL_IB_HCA`: which devices and ports to use, in NCCL_IB_HCA's syntax
//! (parsed by `transport::filter`): `mlx5_0:1,mlx5_1` = device-name prefixes, each
//! optionally with a port; `^mlx5_2` = every device but these; `=mlx5_0` = exact
//! names only (also `^=`).

use crate::transport::filter::NameFilter;

/// A parsed `MIXCCL_IB_HCA` value: the shared name filter with ports, where an
/// empty filter selects every device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HcaFilter(NameFilter);

impl HcaFilter {
    /// Parses the spec; `None` or blank selects everything. Bad port numbers are
    /// an error naming the variable.
    pub(crate) fn parse(spec: Option<&str>) -> Result<HcaFilter, String> {
        NameFilter::parse("MIXCCL_IB_HCA", spec.unwrap_or(""), true).map(HcaFilter)
    }

    /// Is port `port` of device `device` selected?
    pub(crate) fn selects(&self, device: &str, port: u8) -> bool {
        self.0.is_empty() || self.0.selects(device, Some(port))
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
