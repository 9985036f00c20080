//! Address management for the built-in bridge network: which address of each subnet
//! (IPv4, and IPv6 on a dual-stack network) each pod holds.
//!
//! One file per allocated address, `<dir>/<address>`, holding the sandbox id: creating it
//! with O_EXCL is the allocation, so two requests can never get the same address and
//! allocations survive a criusd restart (the directory lives in the state dir, which a
//! reboot clears together with the pods). `<dir>/last-ipv4` (`-ipv6`) remembers the last
//! address handed out; the search starts after it so that a freed address is not reused at once, as
//! CNI's host-local plugin does.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::str::FromStr;

use super::NetworkError;

/// An IPv4 or IPv6 subnet in CIDR notation (`10.88.0.0/16`, `fd88::/64`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    network: IpAddr,
    prefix: u8,
}

impl Subnet {
    /// Its first address (the network address).
    pub fn network(&self) -> IpAddr {
        self.network
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn is_ipv4(&self) -> bool {
        self.network.is_ipv4()
    }

    /// The bridge's own address: the first of the subnet.
    pub fn gateway(&self) -> IpAddr {
        self.address(self.first() + 1)
    }

    /// Addresses pods may get: after the gateway, and before the broadcast address in
    /// IPv4 (IPv6 has none).
    fn pod_range(&self) -> std::ops::RangeInclusive<u128> {
        let last = self.first() | (u128::MAX >> (128 - self.bits() + self.prefix));
        let last = if self.is_ipv4() { last - 1 } else { last };
        self.first() + 2..=last
    }

    fn bits(&self) -> u8 {
        if self.is_ipv4() {
            32
        } else {
            128
        }
    }

    fn first(&self) -> u128 {
        number(self.network)
    }

    fn address(&self, value: u128) -> IpAddr {
        match self.network {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(value as u32)),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(value)),
        }
    }
}

fn number(address: IpAddr) -> u128 {
    match address {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

impl FromStr for Subnet {
    type Err = String;

    fn from_str(text: &str) -> Result<Subnet, String> {
        let (address, prefix) = text
            .split_once('/')
            .ok_or_else(|| format!("{text:?} is not in CIDR notation (address/prefix)"))?;
        let address: IpAddr = address
            .parse()
            .map_err(|_| format!("{address:?} is not an IP address"))?;
        // At least a few pod addresses, and no subnet wider than a sane node's.
        let (bits, allowed) = match address {
            IpAddr::V4(_) => (32, 8..=30),
            IpAddr::V6(_) => (128, 48..=126),
        };
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|prefix| allowed.contains(prefix))
            .ok_or_else(|| {
                format!(
                    "prefix {prefix:?} must be a number from {} to {}",
                    allowed.start(),
                    allowed.end()
                )
            })?;
        let subnet = Subnet {
            network: address,
            prefix,
        };
        let host_bits = u128::MAX >> (128 - bits + prefix);
        if number(address) & host_bits != 0 {
            let network = subnet.address(number(address) & !host_bits);
            return Err(format!(
                "{text} has host bits set: the subnet is {network}/{prefix}"
            ));
        }
        Ok(subnet)
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// The allocations of one subnet, kept in `dir`.
pub struct Ipam {
    subnet: Subnet,
    dir: PathBuf,
}

impl Ipam {
    pub fn new(subnet: Subnet, dir: PathBuf) -> Ipam {
        Ipam { subnet, dir }
    }

    /// Allocates an address to `sandbox_id`; RESOURCE_EXHAUSTED-worthy when none is left.
    pub fn allocate(&self, sandbox_id: &str) -> Result<IpAddr, NetworkError> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|source| NetworkError::io("create", &self.dir, source))?;
        let range = self.subnet.pod_range();
        let (first, last) = (*range.start(), *range.end());
        let start = self
            .last_allocated()
            .filter(|last_given| range.contains(last_given))
            .map_or(first, |last_given| {
                if last_given == last {
                    first
                } else {
                    last_given + 1
                }
            });
        let candidates = (start..=last).chain(first..start);
        for candidate in candidates {
            let address = self.subnet.address(candidate);
            let path = self.dir.join(address.to_string());
            match std::fs::File::options()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(file) => {
                    use std::io::Write;
                    let written = (&file).write_all(sandbox_id.as_bytes());
                    if let Err(source) = written {
                        let _ = std::fs::remove_file(&path);
                        return Err(NetworkError::io("write", &path, source));
                    }
                    let last_path = self.last_path();
                    std::fs::write(&last_path, address.to_string())
                        .map_err(|source| NetworkError::io("write", &last_path, source))?;
                    return Ok(address);
                }
                Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(source) => return Err(NetworkError::io("allocate", &path, source)),
            }
        }
        Err(NetworkError::SubnetExhausted {
            subnet: self.subnet.to_string(),
        })
    }

    /// Frees `address` if `sandbox_id` holds it; freeing twice is fine.
    pub fn release(&self, address: IpAddr, sandbox_id: &str) -> Result<(), NetworkError> {
        let path = self.dir.join(address.to_string());
        match std::fs::read_to_string(&path) {
            Ok(holder) if holder == sandbox_id => std::fs::remove_file(&path)
                .map_err(|source| NetworkError::io("release", &path, source)),
            Ok(_) => Ok(()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(NetworkError::io("read", &path, source)),
        }
    }

    /// Addresses of this subnet held now, with their holders.
    pub fn allocations(&self) -> Vec<(IpAddr, String)> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .filter_map(|entry| {
                let address: IpAddr = entry.file_name().to_str()?.parse().ok()?;
                if address.is_ipv4() != self.subnet.is_ipv4() {
                    return None;
                }
                let holder = std::fs::read_to_string(entry.path()).ok()?;
                Some((address, holder))
            })
            .collect()
    }

    fn last_allocated(&self) -> Option<u128> {
        let text = std::fs::read_to_string(self.last_path()).ok()?;
        text.trim().parse::<IpAddr>().ok().map(number)
    }

    /// Where the last address handed out is remembered, per address family (both
    /// subnets of a dual-stack network share the directory).
    fn last_path(&self) -> PathBuf {
        self.dir.join(if self.subnet.is_ipv4() {
            "last-ipv4"
        } else {
            "last-ipv6"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn subnets_parse_and_name_what_is_wrong() {
        let subnet: Subnet = "10.88.0.0/16".parse().unwrap();
        assert_eq!(subnet.gateway(), ip("10.88.0.1"));
        assert_eq!(subnet.to_string(), "10.88.0.0/16");
        let v6: Subnet = "fd88::/64".parse().unwrap();
        assert_eq!(v6.gateway(), ip("fd88::1"));
        for (text, complaint) in [
            ("10.88.0.1/16", "host bits"),
            ("fd88::1/64", "host bits"),
            ("10.88.0.0", "CIDR"),
            ("10.88.0.0/31", "prefix"),
            ("fd00::/127", "prefix"),
            ("x/8", "IP address"),
        ] {
            let err = text.parse::<Subnet>().unwrap_err();
            assert!(err.contains(complaint), "{text}: {err}");
        }
    }

    #[test]
    fn allocations_are_unique_persist_and_run_out() {
        let dir = tempfile::tempdir().unwrap();
        // A /29 has 8 addresses: network, gateway, 5 for pods, broadcast.
        let ipam = Ipam::new("192.168.7.0/29".parse().unwrap(), dir.path().join("ipam"));
        let given: Vec<_> = (0..5)
            .map(|n| ipam.allocate(&format!("pod{n}")).unwrap())
            .collect();
        assert_eq!(given.first(), Some(&ip("192.168.7.2")));
        assert_eq!(given.last(), Some(&ip("192.168.7.6")));
        match ipam.allocate("pod5") {
            Err(NetworkError::SubnetExhausted { subnet }) => assert_eq!(subnet, "192.168.7.0/29"),
            other => panic!("expected exhaustion, got {other:?}"),
        }
        // Another holder's address is not released; the holder's own is, twice over.
        ipam.release(given[1], "pod0").unwrap();
        assert_eq!(ipam.allocations().len(), 5);
        ipam.release(given[1], "pod1").unwrap();
        ipam.release(given[1], "pod1").unwrap();
        // A new Ipam on the same directory (a restart) sees the same allocations.
        let reopened = Ipam::new("192.168.7.0/29".parse().unwrap(), dir.path().join("ipam"));
        assert_eq!(reopened.allocate("pod6").unwrap(), given[1]);
        assert!(reopened.allocate("pod7").is_err());
    }

    #[test]
    fn ipv6_allocations_share_the_directory_without_mixing_with_ipv4() {
        let dir = tempfile::tempdir().unwrap();
        let v4 = Ipam::new("10.1.0.0/24".parse().unwrap(), dir.path().to_path_buf());
        let v6 = Ipam::new("fd01::/120".parse().unwrap(), dir.path().to_path_buf());
        assert_eq!(v4.allocate("a").unwrap(), ip("10.1.0.2"));
        assert_eq!(v6.allocate("a").unwrap(), ip("fd01::2"));
        assert_eq!(v6.allocate("b").unwrap(), ip("fd01::3"));
        assert_eq!(v4.allocations().len(), 1);
        assert_eq!(v6.allocations().len(), 2);
    }

    #[test]
    fn a_freed_address_is_not_reused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let ipam = Ipam::new("10.1.0.0/24".parse().unwrap(), dir.path().to_path_buf());
        let first = ipam.allocate("a").unwrap();
        ipam.release(first, "a").unwrap();
        let second = ipam.allocate("b").unwrap();
        assert_ne!(first, second);
    }
}
