//! Address management for the built-in bridge network: which IPv4 address of the
//! subnet each pod holds.
//!
//! One file per allocated address, `<dir>/<address>`, holding the sandbox id: creating it
//! with O_EXCL is the allocation, so two requests can never get the same address and
//! allocations survive a criusd restart (the directory lives in the state dir, which a
//! reboot clears together with the pods). `<dir>/last` remembers the last address handed
//! out; the search starts after it so that a freed address is not reused at once, as
//! CNI's host-local plugin does.

use std::fmt;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::str::FromStr;

use super::NetworkError;

/// An IPv4 subnet in CIDR notation (`10.88.0.0/16`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    network: Ipv4Addr,
    prefix: u8,
}

impl Subnet {
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// The bridge's own address: the first of the subnet.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1)
    }

    /// Addresses pods may get: after the gateway, before the broadcast address.
    fn pod_range(&self) -> std::ops::RangeInclusive<u32> {
        let first = u32::from(self.network);
        let last = first | (u32::MAX >> self.prefix);
        first + 2..=last - 1
    }
}

impl FromStr for Subnet {
    type Err = String;

    fn from_str(text: &str) -> Result<Subnet, String> {
        let (address, prefix) = text
            .split_once('/')
            .ok_or_else(|| format!("{text:?} is not in CIDR notation (address/prefix)"))?;
        let address: Ipv4Addr = address
            .parse()
            .map_err(|_| format!("{address:?} is not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|prefix| (8..=30).contains(prefix))
            .ok_or_else(|| format!("prefix {prefix:?} must be a number from 8 to 30"))?;
        let mask = u32::MAX << (32 - prefix);
        if u32::from(address) & !mask != 0 {
            return Err(format!(
                "{text} has host bits set: the subnet is {}/{prefix}",
                Ipv4Addr::from(u32::from(address) & mask)
            ));
        }
        Ok(Subnet {
            network: address,
            prefix,
        })
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
    pub fn allocate(&self, sandbox_id: &str) -> Result<Ipv4Addr, NetworkError> {
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
            let address = Ipv4Addr::from(candidate);
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
                    let last_path = self.dir.join("last");
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
    pub fn release(&self, address: Ipv4Addr, sandbox_id: &str) -> Result<(), NetworkError> {
        let path = self.dir.join(address.to_string());
        match std::fs::read_to_string(&path) {
            Ok(holder) if holder == sandbox_id => std::fs::remove_file(&path)
                .map_err(|source| NetworkError::io("release", &path, source)),
            Ok(_) => Ok(()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(NetworkError::io("read", &path, source)),
        }
    }

    /// Addresses held now, with their holders.
    pub fn allocations(&self) -> Vec<(Ipv4Addr, String)> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .filter_map(|entry| {
                let address = entry.file_name().to_str()?.parse().ok()?;
                let holder = std::fs::read_to_string(entry.path()).ok()?;
                Some((address, holder))
            })
            .collect()
    }

    fn last_allocated(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.dir.join("last")).ok()?;
        text.trim().parse::<Ipv4Addr>().ok().map(u32::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_parse_and_name_what_is_wrong() {
        let subnet: Subnet = "10.88.0.0/16".parse().unwrap();
        assert_eq!(subnet.gateway(), Ipv4Addr::new(10, 88, 0, 1));
        assert_eq!(subnet.to_string(), "10.88.0.0/16");
        assert!("10.88.0.1/16"
            .parse::<Subnet>()
            .unwrap_err()
            .contains("host bits"));
        assert!("10.88.0.0".parse::<Subnet>().unwrap_err().contains("CIDR"));
        assert!("10.88.0.0/31"
            .parse::<Subnet>()
            .unwrap_err()
            .contains("prefix"));
        assert!("fd00::/64".parse::<Subnet>().unwrap_err().contains("IPv4"));
    }

    #[test]
    fn allocations_are_unique_persist_and_run_out() {
        let dir = tempfile::tempdir().unwrap();
        // A /29 has 8 addresses: network, gateway, 5 for pods, broadcast.
        let ipam = Ipam::new("192.168.7.0/29".parse().unwrap(), dir.path().join("ipam"));
        let given: Vec<_> = (0..5)
            .map(|n| ipam.allocate(&format!("pod{n}")).unwrap())
            .collect();
        assert_eq!(given.first(), Some(&Ipv4Addr::new(192, 168, 7, 2)));
        assert_eq!(given.last(), Some(&Ipv4Addr::new(192, 168, 7, 6)));
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
    fn a_freed_address_is_not_reused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let ipam = Ipam::new("10.1.0.0/24".parse().unwrap(), dir.path().to_path_buf());
        let first = ipam.allocate("a").unwrap();
        ipam.release(first, "a").unwrap();
        let second = ipam.allocate("b").unwrap();
        assert_ne!(first, second);
    }
}
