//! The container's network: a network namespace of its own, joined to the
//! host by a veth pair whose host end is plugged into a bridge.
//!
//! ```text
//!   container netns          host netns
//!   eth0 10.77.0.2/16 ═══ veth ═══ feXXXXXXXX ─┐
//!   default via 10.77.0.1                      ├─ ferry0 10.77.0.1/16 ── NAT ── the host's uplink
//!   (another container) ══ veth ══ feYYYYYYYY ─┘
//! ```
//!
//! A veth pair is a cable: what goes in one end comes out of the other, and
//! each end can live in a different network namespace. The bridge is a
//! switch: every host end plugged into it can reach the others, and the
//! bridge's own address is the containers' gateway to the host. Leaving the
//! host, their packets get the host's address (masquerade, nat.rs).
//!
//! The bridge, made once, is made with iproute2's `ip`, the commands the
//! chapter types by hand. What every container start needs (the veth pair,
//! eth0's address and route, lo) goes straight to the kernel over netlink
//! (netlink.rs): a process per `ip` command would cost more than the rest
//! of the network together.

use std::fs;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail, ensure};
use nix::unistd::Pid;
use serde_json::Value;

use crate::ipam::{Lease, Pool, Subnet};
use crate::nat::{self, Published};
use crate::netlink::{self, Netlink};
use crate::ports::{self, Publish};

/// The bridge every container of the `bridge` network is plugged into,
/// made by the first one and left in place after, like Docker's docker0.
pub const BRIDGE: &str = "ferry0";

/// The subnet of the bridge: a /16 that neither Docker (172.17.0.0/16 and
/// its pools in 172.18-31 and 192.168) nor Podman (10.88.0.0/16) take by
/// default. $FERRY_SUBNET overrides it.
const DEFAULT_SUBNET: &str = "10.77.0.0/16";

/// `--network`, as Docker names the modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Its own network namespace, on the bridge: an address, a route out.
    Bridge,
    /// Its own network namespace with only `lo`: no way out at all.
    None,
    /// No network namespace: the host's interfaces, addresses and ports.
    Host,
}

impl Mode {
    pub fn parse(name: &str) -> Result<Self, String> {
        match name {
            "bridge" => Ok(Self::Bridge),
            "none" => Ok(Self::None),
            "host" => Ok(Self::Host),
            _ => Err("the networks are bridge, none and host".to_owned()),
        }
    }

    /// Whether the container gets a network namespace of its own.
    pub fn has_namespace(self) -> bool {
        self != Self::Host
    }
}

/// The subnet the bridge uses: $FERRY_SUBNET, or the default.
pub fn subnet() -> Result<Subnet> {
    let text = std::env::var("FERRY_SUBNET").unwrap_or_else(|_| DEFAULT_SUBNET.to_owned());
    let subnet = Subnet::parse(&text).context("FERRY_SUBNET")?;
    // A /31 or /32 has no address for a container, and anything wider than
    // a /8 is more than any host should hand out.
    ensure!(
        (8..=30).contains(&subnet.prefix()),
        "FERRY_SUBNET: {subnet}: a subnet for containers has a prefix of 8 to 30"
    );
    Ok(subnet)
}

// ANCHOR: bridge
/// Makes the bridge, with the subnet's first address as its own, unless it
/// is there already; and refuses a subnet that the host reaches otherwise
/// (another network's route), since its addresses are someone else's.
/// Called under the address pool's lock: one runtime at a time.
pub fn ensure_bridge(subnet: &Subnet) -> Result<Made> {
    // ANCHOR: lab05-3-bridge Make the ferry0 bridge once, with the subnet's first address, after refusing a subnet the host routes already (ip link add … type bridge) [05-veth.md#the-code]
    if bridge_exists() {
        let has = bridge_address()?;
        ensure!(
            has == Some(subnet.gateway()),
            "the bridge {BRIDGE} has {}, not {}: its containers use another subnet; \
             set FERRY_SUBNET to the bridge's, or remove it when no container runs \
             (`ip link del {BRIDGE}`)",
            has.map_or("no address".to_owned(), |address| address.to_string()),
            subnet.gateway()
        );
        return Ok(Made::Before);
    }
    refuse_overlap(subnet)?;
    let gateway = format!("{}/{}", subnet.gateway(), subnet.prefix());
    // A bridge takes the lowest MAC address of its ports unless it has one
    // of its own: each container that goes could change the gateway's
    // address under the others, which then lose it until their neighbour
    // caches expire. So one fixed, locally administered address.
    let mac = mac_for(subnet.gateway());
    ip_batch(&[
        format!("link add {BRIDGE} address {mac} type bridge"),
        format!("addr add {gateway} dev {BRIDGE}"),
        format!("link set {BRIDGE} up"),
    ])?;
    Ok(Made::Now)
    // ANCHOR_END: lab05-3-bridge instead: Ok(Made::Before)
}

/// A locally administered MAC address (the 0x02 bit) made from an IPv4
/// address, as Docker makes its containers': an address that comes back
/// comes back with the same MAC, and no neighbour cache holds a stale one.
pub fn mac_for(address: Ipv4Addr) -> String {
    let [a, b, c, d] = address.octets();
    format!("02:66:{a:02x}:{b:02x}:{c:02x}:{d:02x}")
}

/// The bridge's IPv4 address, with one ioctl (SIOCGIFADDR).
fn bridge_address() -> Result<Option<Ipv4Addr>> {
    // SAFETY: socket(2) takes plain integers and returns a new descriptor.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    let fd = nix::errno::Errno::result(fd).context("open a socket")?;
    // SAFETY: the descriptor is new and ours alone; OwnedFd closes it.
    let _socket = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // SAFETY: ifreq is plain data; zeroed is a valid value of it.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (to, from) in request.ifr_name.iter_mut().zip(BRIDGE.bytes()) {
        *to = from as libc::c_char;
    }
    // SAFETY: SIOCGIFADDR fills in an ifreq, which `request` is.
    let done = unsafe { libc::ioctl(fd, libc::SIOCGIFADDR, &mut request) };
    if done != 0 {
        // EADDRNOTAVAIL: the bridge has no IPv4 address.
        return Ok(None);
    }
    // SAFETY: for SIOCGIFADDR the kernel wrote a sockaddr_in into the union.
    let address = unsafe {
        let sockaddr: libc::sockaddr_in = std::mem::transmute_copy(&request.ifr_ifru.ifru_addr);
        sockaddr.sin_addr.s_addr
    };
    Ok(Some(Ipv4Addr::from(u32::from_be(address))))
}

/// Whether the bridge had to be made by this runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Made {
    Before,
    Now,
}

/// Whether this network namespace has the bridge: one ioctl, where
/// running `ip` would cost a process (the bench counts every millisecond).
fn bridge_exists() -> bool {
    netlink::index_of(BRIDGE) != 0
}
// ANCHOR_END: bridge

/// A route the host has to part of the subnet (other than the default
/// route, which reaches everything) means those addresses are in use.
fn refuse_overlap(subnet: &Subnet) -> Result<()> {
    let output = Command::new(tool("ip")?)
        .args(["-j", "-4", "route", "show"])
        .output()
        .context("run ip route show")?;
    let routes: Value = serde_json::from_slice(&output.stdout).context("read ip's JSON")?;
    for route in routes.as_array().into_iter().flatten() {
        let Some(dst) = route["dst"].as_str().filter(|dst| *dst != "default") else {
            continue;
        };
        let Ok(other) = Subnet::parse(dst) else {
            continue;
        };
        if other.overlaps(*subnet) {
            let via = route["dev"].as_str().unwrap_or("?");
            bail!(
                "the subnet {subnet} overlaps the host's route to {dst} (dev {via}): \
                 set FERRY_SUBNET to a subnet the host does not use"
            );
        }
    }
    Ok(())
}

// ANCHOR: connect
/// The container's end of the network, made once its namespace exists:
/// a veth pair from the bridge whose other end is born in the child's
/// network namespace, as eth0. The child gives it its address and route
/// (`configure_inside`).
///
/// Nothing removes it: a veth pair lives as long as both its namespaces,
/// and the kernel deletes it (both ends) when the container's namespace
/// goes, with its last process, however that process ends. Deleting it
/// ourselves would only wait for the same (15 ms, for an RCU grace period).
pub fn connect(child: Pid, id: &str, address: Ipv4Addr) -> Result<()> {
    // ANCHOR: lab05-4-veth A veth pair whose host end is up on the bridge, and whose other end is born in the child's namespace as eth0 (netlink: RTM_NEWLINK, kind veth, VETH_INFO_PEER, IFLA_NET_NS_PID) [05-veth.md#the-code]
    // Interface names are at most 15 bytes: "fe" and 10 of the id's.
    let host_end = format!("fe{}", &id[..10]);
    let bridge = netlink::index_of(BRIDGE);
    ensure!(bridge != 0, "the bridge {BRIDGE} is gone");
    let mac = mac_for(address);
    Netlink::open()?.add_veth(&host_end, bridge, "eth0", &mac, child.as_raw())
    // ANCHOR_END: lab05-4-veth instead: Ok(())
}
// ANCHOR_END: connect

// ANCHOR: inside
/// In the child, in its own network namespace: `lo` up (a new namespace
/// starts with it down), and on the bridge, eth0 up with the container's
/// address and a default route via the bridge.
pub fn configure_inside(bridge: Option<(Ipv4Addr, Subnet)>) -> Result<()> {
    // ANCHOR: lab05-2-inside In the child: lo up; on the bridge, eth0 up with its address and a default route via the bridge (netlink: RTM_NEWLINK, RTM_NEWADDR, RTM_NEWROUTE) [05-veth.md#the-code]
    let netlink = Netlink::open()?;
    netlink.set_up(netlink::index_of("lo"), "lo")?;
    let Some((address, subnet)) = bridge else {
        return Ok(());
    };
    let eth0 = netlink::index_of("eth0");
    ensure!(eth0 != 0, "no eth0 in the container's network namespace");
    netlink.add_address(eth0, address, subnet.prefix())?;
    netlink.set_up(eth0, "eth0")?;
    netlink.add_default_route(eth0, subnet.gateway())
    // ANCHOR_END: lab05-2-inside instead: Ok(())
}
// ANCHOR_END: inside

/// Forwarding on: the host routes the containers' packets on, as a router
/// does. (Per network namespace; Docker sets it too.)
pub fn enable_forwarding() -> Result<()> {
    let path = "/proc/sys/net/ipv4/ip_forward";
    if fs::read_to_string(path).is_ok_and(|on| on.trim() == "1") {
        return Ok(());
    }
    fs::write(path, "1").with_context(|| format!("write 1 to {path}"))
}

/// `route_localnet` on the bridge: lets a connection from the host to
/// 127.0.0.1:PORT be forwarded to a container. The kernel otherwise drops a
/// packet with a loopback address that would leave through a real device.
pub fn route_localnet() -> Result<()> {
    let path = format!("/proc/sys/net/ipv4/conf/{BRIDGE}/route_localnet");
    fs::write(&path, "1").with_context(|| format!("write 1 to {path}"))
}

/// Runs `ip -batch -` with these commands, in the current namespace.
pub fn ip_batch(commands: &[String]) -> Result<()> {
    run_with_input("ip", &["-batch", "-"], &commands.join("\n"))
}

/// Runs a tool with `input` on its stdin, and fails with what it said.
pub fn run_with_input(name: &str, args: &[&str], input: &str) -> Result<()> {
    let mut child = Command::new(tool(name)?)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("run {name}"))?;
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(input.as_bytes())
        .with_context(|| format!("write to {name}"))?;
    let output = child
        .wait_with_output()
        .with_context(|| format!("wait for {name}"))?;
    ensure!(
        output.status.success(),
        "{name} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
            .trim()
            .replace('\n', "; ")
    );
    Ok(())
}

/// The tools the network needs, where Debian puts them (sudo's PATH may
/// not reach them), or a clear error that names the package.
pub fn tool(name: &str) -> Result<PathBuf> {
    let package = match name {
        "ip" => "iproute2",
        _ => "nftables",
    };
    ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        .iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|path| path.exists())
        .with_context(|| {
            format!("the network needs the `{name}` command: apt-get install {package}")
        })
}

/// The host's nameservers for the container's /etc/resolv.conf. A local
/// stub resolver (systemd-resolved's 127.0.0.53) cannot be reached from
/// the container's namespace: then the servers the stub itself asks, as
/// Docker does.
pub fn nameservers() -> Vec<Ipv4Addr> {
    let read = |path: &str| fs::read_to_string(path).unwrap_or_default();
    let host = read("/etc/resolv.conf");
    // systemd-resolved keeps the servers it asks here.
    upstream_of(&host, || read("/run/systemd/resolve/resolv.conf"))
}

/// The servers of resolv.conf text `host`, or, if it names a loopback
/// server (a stub), the non-loopback ones of `stub_asks`.
fn upstream_of(host: &str, stub_asks: impl FnOnce() -> String) -> Vec<Ipv4Addr> {
    let servers = |text: &str| -> Vec<Ipv4Addr> {
        text.lines()
            .filter_map(|line| line.strip_prefix("nameserver"))
            .filter_map(|address| address.trim().parse().ok())
            .collect()
    };
    let named = servers(host);
    if !named.iter().any(Ipv4Addr::is_loopback) {
        return named;
    }
    servers(&stub_asks())
        .into_iter()
        .filter(|server| !server.is_loopback())
        .collect()
}

// ANCHOR: prepare
/// What the container's network holds on the host while it runs: its
/// address and its published ports' rules, given back when dropped (the
/// rules first, so that they never point at an address someone else has).
pub struct HostSide {
    _published: Option<Published>,
    lease: Option<Lease>,
    firewall: Option<nat::FirewallCheck>,
}

/// Everything the host side needs before the container exists: the bridge,
/// forwarding, the NAT rules, an address, the published ports.
pub fn prepare(mode: Mode, id: &str, ports: &[Publish]) -> Result<HostSide> {
    if mode != Mode::Bridge {
        ensure!(
            ports.is_empty(),
            "-p publishes a port of the container's own address: it needs --network bridge"
        );
        return Ok(HostSide {
            _published: None,
            lease: None,
            firewall: None,
        });
    }
    ports::check(ports)?;
    let subnet = subnet()?;
    // Under the pool's lock, all of it: the first of runtimes started at
    // the same moment makes the bridge, the others find it whole; who is
    // alive, whose rules go, which address and ports are free.
    let pool = Pool::lock(subnet)?;
    // The bridge and its rules are made together, once: like docker0, they
    // stay. (`ip link del ferry0` has the next container make both anew.)
    if ensure_bridge(&subnet)? == Made::Now {
        let routed = enable_forwarding()
            .and_then(|()| route_localnet())
            .and_then(|()| nat::prepare(subnet));
        if let Err(error) = routed {
            // Not half a bridge: the next container makes both anew.
            let _ = ip_batch(&[format!("link del {BRIDGE}")]);
            return Err(error);
        }
    }
    let reclaimed = pool.reclaim()?;
    if reclaimed.dead > 0 || !ports.is_empty() {
        nat::remove_rules_of_the_dead(&reclaimed.alive)?;
    }
    let lease = pool.lease(id)?;
    let published = Published::add(id, &lease, ports)?;
    Ok(HostSide {
        _published: published,
        lease: Some(lease),
        // Started now, read after the container is released: it runs
        // while the container starts, and costs its start nothing.
        firewall: Some(nat::FirewallCheck::start()),
    })
}

impl HostSide {
    /// The container's address on the bridge, if it has one.
    pub fn address(&self) -> Option<Ipv4Addr> {
        self.lease.as_ref().map(Lease::address)
    }

    /// Once the child's namespace exists: its end of the network.
    pub fn connect(&self, child: Pid, id: &str) -> Result<()> {
        match &self.lease {
            Some(lease) => connect(child, id, lease.address()),
            None => Ok(()),
        }
    }

    /// What the child needs to configure its end: its address and subnet.
    pub fn inside(&self) -> Option<(Ipv4Addr, Subnet)> {
        self.lease
            .as_ref()
            .map(|lease| (lease.address(), lease.subnet()))
    }

    /// Says so if something else on the host drops the containers'
    /// forwarded packets.
    pub fn warn_of_the_firewall(&mut self) {
        let Some(check) = self.firewall.take() else {
            return;
        };
        if let Some(chain) = check.blocked_by() {
            eprintln!(
                "warning: the host's firewall drops forwarded packets ({chain}, policy drop, \
                 as Docker's and ufw's do): the container reaches nothing beyond the host \
                 unless that chain accepts {BRIDGE}'s traffic"
            );
        }
    }
}
// ANCHOR_END: prepare

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_stub_gives_way_to_the_servers_it_asks() {
        let stub = "# systemd-resolved\nnameserver 127.0.0.53\noptions edns0\n";
        let upstream = "nameserver 192.0.2.53\nnameserver 127.0.0.1\n";
        assert_eq!(
            upstream_of(stub, || upstream.to_owned()),
            [Ipv4Addr::new(192, 0, 2, 53)]
        );
        let plain = "nameserver 198.51.100.53\n";
        assert_eq!(
            upstream_of(plain, || unreachable!("no stub, nothing else read")),
            [Ipv4Addr::new(198, 51, 100, 53)]
        );
    }
}
