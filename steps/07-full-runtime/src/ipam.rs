//! Address allocation: one address of the bridge's subnet per running
//! container, and never the same one twice at once.
//!
//! The pool is a folder with one file per address in use, named after the
//! address and holding the container's id. The runtime that leased an
//! address holds a lock on its file while it lives; the kernel drops the
//! lock when the process dies, however it dies. So a file nobody holds is a
//! lease whose owner is dead: the next runtime removes it, and the address
//! is free again. Every change to the pool is made under a lock on the
//! folder, so twenty containers started at once get twenty addresses.
//!
//! The folder belongs to the bridge, and the bridge to its network
//! namespace: `/run/ferry/net-INODE`, INODE naming the namespace. Every
//! `--root` on this host shares it (they share the bridge), and /run is
//! emptied at boot, as the bridge is gone then too.

use std::fmt;
use std::fs::{self, File};
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use anyhow::{Context, Result, bail, ensure};

use crate::state::lock;

// ANCHOR: subnet
/// An IPv4 subnet, `10.77.0.0/16`: the first address is the network's, the
/// next the gateway's (the bridge), the last the broadcast address; the
/// containers get the ones between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    base: u32,
    prefix: u8,
}

impl Subnet {
    pub fn parse(text: &str) -> Result<Self> {
        let (address, prefix) = text.split_once('/').unwrap_or((text, "32"));
        let address: Ipv4Addr = address
            .parse()
            .with_context(|| format!("{text}: not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .with_context(|| format!("{text}: the prefix length is 0 to 32"))?;
        let subnet = Self {
            base: u32::from(address) & mask(prefix),
            prefix,
        };
        ensure!(
            subnet.base == u32::from(address),
            "{text}: the address has host bits set; the subnet is {subnet}"
        );
        Ok(subnet)
    }

    pub fn prefix(self) -> u8 {
        self.prefix
    }

    /// The bridge's own address: the first after the network's.
    pub fn gateway(self) -> Ipv4Addr {
        Ipv4Addr::from(self.base + 1)
    }

    /// The addresses containers may have, lowest first.
    fn hosts(self) -> impl Iterator<Item = Ipv4Addr> {
        let broadcast = self.base | !mask(self.prefix);
        (self.base + 2..broadcast).map(Ipv4Addr::from)
    }

    pub fn overlaps(self, other: Subnet) -> bool {
        let shorter = mask(self.prefix.min(other.prefix));
        self.base & shorter == other.base & shorter
    }
}

fn mask(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.prefix)
    }
}
// ANCHOR_END: subnet

// ANCHOR: pool
/// The pool, locked: changes to it, and to what depends on who is alive
/// (nat.rs's rules), are made while this is held.
pub struct Pool {
    dir: PathBuf,
    subnet: Subnet,
    _lock: File,
}

impl Pool {
    pub fn lock(subnet: Subnet) -> Result<Self> {
        let netns = fs::metadata("/proc/self/ns/net").context("stat /proc/self/ns/net")?;
        let dir = PathBuf::from(format!("/run/ferry/net-{}", netns.ino()));
        fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let lock = lock(&dir, true)?;
        Ok(Self {
            dir,
            subnet,
            _lock: lock,
        })
    }

    /// Removes the leases whose owner is dead; says how many, and which
    /// containers are alive (their runtime holds its lease).
    pub fn reclaim(&self) -> Result<Reclaimed> {
        let mut alive = Vec::new();
        let mut dead = 0;
        for entry in
            fs::read_dir(&self.dir).with_context(|| format!("read {}", self.dir.display()))?
        {
            let path = entry?.path();
            match lock(&path, false) {
                // We got the lock: its owner is gone.
                Ok(_dead) => {
                    fs::remove_file(&path).with_context(|| {
                        format!("remove {}, a dead container's lease", path.display())
                    })?;
                    dead += 1;
                }
                Err(_) => alive.push(
                    fs::read_to_string(&path)
                        .unwrap_or_default()
                        .trim()
                        .to_owned(),
                ),
            }
        }
        Ok(Reclaimed { alive, dead })
    }

    /// Leases the lowest free address to container `id`.
    pub fn lease(&self, id: &str) -> Result<Lease> {
        let Some(address) = self
            .subnet
            .hosts()
            .find(|address| !self.dir.join(address.to_string()).exists())
        else {
            bail!("every address of {} is in use", self.subnet);
        };
        let path = self.dir.join(address.to_string());
        let mut file =
            File::create_new(&path).with_context(|| format!("create {}", path.display()))?;
        file.write_all(id.as_bytes())
            .with_context(|| format!("write {}", path.display()))?;
        let lock = match lock(&path, false) {
            Ok(lock) => lock,
            Err(error) => {
                let _ = fs::remove_file(&path);
                return Err(error);
            }
        };
        Ok(Lease {
            path,
            address,
            subnet: self.subnet,
            _lock: lock,
        })
    }
}

pub struct Reclaimed {
    pub alive: Vec<String>,
    pub dead: usize,
}

/// One container's address, held while the runtime lives; given back when
/// dropped.
pub struct Lease {
    path: PathBuf,
    address: Ipv4Addr,
    subnet: Subnet,
    _lock: File,
}

impl Lease {
    pub fn address(&self) -> Ipv4Addr {
        self.address
    }

    pub fn subnet(&self) -> Subnet {
        self.subnet
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // Removed while we still hold its lock: a runtime reclaiming dead
        // leases cannot take it for dead first, and one that finds the
        // address free after this makes a file of its own.
        if let Err(error) = fs::remove_file(&self.path) {
            eprintln!(
                "warning: could not give back {}: {error}",
                self.path.display()
            );
        }
    }
}
// ANCHOR_END: pool

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_parse_overlap_and_give_their_hosts() {
        let subnet = Subnet::parse("10.77.0.0/16").unwrap();
        assert_eq!(subnet.to_string(), "10.77.0.0/16");
        assert_eq!(subnet.gateway(), Ipv4Addr::new(10, 77, 0, 1));
        assert_eq!(subnet.hosts().next(), Some(Ipv4Addr::new(10, 77, 0, 2)));
        assert_eq!(subnet.hosts().last(), Some(Ipv4Addr::new(10, 77, 255, 254)));
        assert!(subnet.overlaps(Subnet::parse("10.77.3.0/24").unwrap()));
        assert!(subnet.overlaps(Subnet::parse("10.0.0.0/8").unwrap()));
        assert!(!subnet.overlaps(Subnet::parse("10.78.0.0/16").unwrap()));
        assert!(Subnet::parse("10.77.0.1/16").is_err());
        assert!(Subnet::parse("10.77.0.0/33").is_err());
    }
}
