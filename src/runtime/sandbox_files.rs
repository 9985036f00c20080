//! The text of the files a sandbox shares with its containers: `/etc/resolv.conf` and
//! `/etc/hosts`. Pure: the caller writes them into the sandbox's directory and passes
//! their paths as [`super::SandboxFiles`].
//!
//! `resolv.conf` follows CRI `DNSConfig` (kubelet has already merged the pod's DNS
//! policy into it): one `search` line, one `nameserver` line per server, one `options`
//! line, each only when non-empty (resolv.conf(5)). A pod with no DNS config at all
//! should get a copy of the host's file instead, which is the caller's decision.
//!
//! `hosts` has the loopback names Docker and kubelet write, one line mapping each pod IP
//! to the pod's hostname, then the extra entries (pod `hostAliases`).

use std::fmt::Write;
use std::net::IpAddr;

use super::input::DnsConfig;

/// Loopback and IPv6 multicast names every container expects.
const LOCALHOST_ENTRIES: &str = "\
127.0.0.1\tlocalhost
::1\tlocalhost ip6-localhost ip6-loopback
fe00::0\tip6-localnet
fe00::0\tip6-mcastprefix
fe00::1\tip6-allnodes
fe00::2\tip6-allrouters
";

/// `/etc/resolv.conf` text for a sandbox.
pub fn resolv_conf(dns: &DnsConfig) -> String {
    let mut text = String::new();
    if !dns.searches.is_empty() {
        // Writing to a String cannot fail.
        let _ = writeln!(text, "search {}", dns.searches.join(" "));
    }
    for server in &dns.servers {
        let _ = writeln!(text, "nameserver {server}");
    }
    if !dns.options.is_empty() {
        let _ = writeln!(text, "options {}", dns.options.join(" "));
    }
    text
}

/// `/etc/hosts` text for a sandbox: loopback names, `pod_ips` → `hostname`, then each
/// `(ip, names)` of `extra`.
pub fn hosts_file(hostname: &str, pod_ips: &[IpAddr], extra: &[(String, Vec<String>)]) -> String {
    let mut text = String::from(LOCALHOST_ENTRIES);
    if !hostname.is_empty() {
        for ip in pod_ips {
            let _ = writeln!(text, "{ip}\t{hostname}");
        }
    }
    for (ip, names) in extra {
        if !names.is_empty() {
            let _ = writeln!(text, "{ip}\t{}", names.join(" "));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_has_search_nameservers_and_options() {
        let dns = DnsConfig {
            servers: vec!["10.96.0.10".into(), "fd00::a".into()],
            searches: vec!["ns.svc.cluster.local".into(), "svc.cluster.local".into()],
            options: vec!["ndots:5".into(), "edns0".into()],
        };
        assert_eq!(
            resolv_conf(&dns),
            "search ns.svc.cluster.local svc.cluster.local\n\
             nameserver 10.96.0.10\n\
             nameserver fd00::a\n\
             options ndots:5 edns0\n"
        );
    }

    #[test]
    fn resolv_conf_leaves_out_empty_parts() {
        let dns = DnsConfig {
            servers: vec!["1.1.1.1".into()],
            ..Default::default()
        };
        assert_eq!(resolv_conf(&dns), "nameserver 1.1.1.1\n");
        assert_eq!(resolv_conf(&DnsConfig::default()), "");
    }

    #[test]
    fn hosts_file_maps_pod_ips_and_extra_entries() {
        let ips: Vec<IpAddr> = vec!["10.88.0.5".parse().unwrap(), "fd00::5".parse().unwrap()];
        let extra = vec![
            (
                "10.1.2.3".to_string(),
                vec!["foo.local".to_string(), "bar".to_string()],
            ),
            ("10.9.9.9".to_string(), vec![]),
        ];
        let text = hosts_file("web-0", &ips, &extra);
        assert!(text.starts_with("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost"));
        assert!(text.ends_with("10.88.0.5\tweb-0\nfd00::5\tweb-0\n10.1.2.3\tfoo.local bar\n"));
        assert!(!text.contains("10.9.9.9"));
    }

    #[test]
    fn hosts_file_without_hostname_has_only_loopback_and_extra() {
        let ips: Vec<IpAddr> = vec!["10.88.0.5".parse().unwrap()];
        assert_eq!(hosts_file("", &ips, &[]), LOCALHOST_ENTRIES);
    }
}
