//! Host identity: ranks share memory when hostname, boot id and network namespace
//! all match. Two network namespaces on one machine are two hosts, which is how the
//! tests emulate a cluster; `MIXCCL_HOST_ID` overrides the whole identity.

/// This process's host identity, e.g. `node1/3f2c..-boot/net:[4026531840]`.
pub(crate) fn host_id() -> String {
    if let Some(id) = crate::config::env("MIXCCL_HOST_ID") {
        if !id.trim().is_empty() {
            return id.trim().to_string();
        }
    }
    let read = |path: &str| {
        std::fs::read_to_string(path)
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    let netns = std::fs::read_link("/proc/self/ns/net")
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!(
        "{}/{}/{}",
        read("/proc/sys/kernel/hostname"),
        read("/proc/sys/kernel/random/boot_id"),
        netns
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn identity_names_host_boot_and_netns() {
        let id = super::host_id();
        if std::env::var("MIXCCL_HOST_ID").is_err() {
            assert!(id.contains("net:["), "{id}");
            assert_eq!(id.matches('/').count(), 2, "{id}");
        }
    }
}
