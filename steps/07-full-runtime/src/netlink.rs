//! Netlink, the socket over which the kernel's network is configured: what
//! `ip` speaks. A request is a message (a header, a fixed struct, then
//! attributes: type, length, value, some nested in others), and the kernel
//! answers each with an acknowledgement that carries an errno, 0 for done.
//!
//! Every container start runs these requests, where running `ip` would
//! cost a process each, a millisecond or more. The bridge, made once, is
//! still made with `ip` (network.rs), like the by-hand session.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use anyhow::{Context, Result, bail};
use nix::errno::Errno;

/// Attribute types and values from <linux/if_link.h>, <linux/veth.h>,
/// <linux/if_addr.h> and <linux/rtnetlink.h> that libc does not carry.
const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MASTER: u16 = 10;
const IFLA_LINKINFO: u16 = 18;
const IFLA_NET_NS_PID: u16 = 19;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const RTA_GATEWAY: u16 = 5;
const RTA_OIF: u16 = 4;
/// Attributes nest; the kernel wants this bit on nested ones' types.
const NLA_F_NESTED: u16 = 1 << 15;

/// A request being written: the header's length is filled in at the end.
struct Message {
    bytes: Vec<u8>,
    /// Where each open nested attribute starts, to write its length.
    open: Vec<usize>,
}

impl Message {
    fn new(kind: u16, flags: u16) -> Self {
        let mut message = Self {
            bytes: Vec::with_capacity(256),
            open: Vec::new(),
        };
        message.u32(0); // nlmsg_len, filled in by `finish`
        message.u16(kind);
        message.u16(flags | libc::NLM_F_REQUEST as u16 | libc::NLM_F_ACK as u16);
        message.u32(1); // nlmsg_seq
        message.u32(0); // nlmsg_pid: 0 is the kernel
        message
    }

    fn u16(&mut self, value: u16) {
        self.bytes.extend_from_slice(&value.to_ne_bytes());
    }

    fn u32(&mut self, value: u32) {
        self.bytes.extend_from_slice(&value.to_ne_bytes());
    }

    fn pad(&mut self) {
        while !self.bytes.len().is_multiple_of(4) {
            self.bytes.push(0);
        }
    }

    /// struct ifinfomsg: family, type, index, flags, the flags to change.
    fn link(&mut self, index: u32, up: bool) {
        self.bytes.extend_from_slice(&[libc::AF_UNSPEC as u8, 0]);
        self.u16(0);
        self.u32(index);
        let flags = if up { libc::IFF_UP as u32 } else { 0 };
        self.u32(flags);
        self.u32(flags);
    }

    fn attribute(&mut self, kind: u16, value: &[u8]) {
        self.u16((4 + value.len()) as u16);
        self.u16(kind);
        self.bytes.extend_from_slice(value);
        self.pad();
    }

    fn name(&mut self, kind: u16, name: &str) {
        let mut value = name.as_bytes().to_vec();
        value.push(0);
        self.attribute(kind, &value);
    }

    fn begin(&mut self, kind: u16) {
        self.open.push(self.bytes.len());
        self.u16(0);
        self.u16(kind | NLA_F_NESTED);
    }

    fn end(&mut self) {
        let start = self.open.pop().expect("a nested attribute is open");
        let length = (self.bytes.len() - start) as u16;
        self.bytes[start..start + 2].copy_from_slice(&length.to_ne_bytes());
    }

    fn finish(mut self) -> Vec<u8> {
        let length = self.bytes.len() as u32;
        self.bytes[..4].copy_from_slice(&length.to_ne_bytes());
        self.bytes
    }
}

/// A netlink socket of the network namespace it was opened in.
pub struct Netlink {
    socket: OwnedFd,
}

impl Netlink {
    pub fn open() -> Result<Self> {
        // SAFETY: socket(2) takes plain integers and returns a new descriptor.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        let fd = Errno::result(fd).context("open a netlink socket")?;
        // SAFETY: the descriptor is new and ours alone; OwnedFd closes it.
        let socket = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self { socket })
    }

    /// Sends one request and reads the kernel's acknowledgement.
    fn request(&self, message: Message, what: &str) -> Result<()> {
        let bytes = message.finish();
        let fd = self.socket.as_raw_fd();
        // SAFETY: `bytes` is a valid buffer of that length.
        let sent = unsafe { libc::send(fd, bytes.as_ptr().cast(), bytes.len(), 0) };
        Errno::result(sent).with_context(|| format!("{what}: send to netlink"))?;
        let mut answer = [0u8; 4096];
        // SAFETY: `answer` is a writable buffer of that length.
        let read = unsafe { libc::recv(fd, answer.as_mut_ptr().cast(), answer.len(), 0) };
        let read = Errno::result(read).with_context(|| format!("{what}: read netlink"))? as usize;
        // An acknowledgement is an NLMSG_ERROR message: the header (16
        // bytes), then the errno as a negative i32 (0: it is done).
        let kind = u16::from_ne_bytes([answer[4], answer[5]]);
        if read < 20 || kind != libc::NLMSG_ERROR as u16 {
            bail!("{what}: netlink answered with message type {kind}, not an acknowledgement");
        }
        let errno = i32::from_ne_bytes([answer[16], answer[17], answer[18], answer[19]]);
        if errno != 0 {
            return Err(Errno::from_raw(-errno)).with_context(|| what.to_owned());
        }
        Ok(())
    }

    // ANCHOR: veth
    /// `ip link add HOST_END up master BRIDGE type veth peer name PEER
    /// address MAC netns PID`: a veth pair whose host end is up on the
    /// bridge, and whose other end is born in the network namespace of
    /// process `pid`.
    pub fn add_veth(
        &self,
        host_end: &str,
        bridge: u32,
        peer: &str,
        mac: &str,
        pid: i32,
    ) -> Result<()> {
        let mac: Vec<u8> = mac
            .split(':')
            .map(|byte| u8::from_str_radix(byte, 16))
            .collect::<Result<_, _>>()
            .with_context(|| format!("the MAC address {mac}"))?;
        let flags = (libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16;
        let mut message = Message::new(libc::RTM_NEWLINK, flags);
        message.link(0, true);
        message.name(IFLA_IFNAME, host_end);
        message.attribute(IFLA_MASTER, &bridge.to_ne_bytes());
        message.begin(IFLA_LINKINFO);
        message.name(IFLA_INFO_KIND, "veth");
        message.begin(IFLA_INFO_DATA);
        message.begin(VETH_INFO_PEER);
        message.link(0, false);
        message.name(IFLA_IFNAME, peer);
        message.attribute(IFLA_ADDRESS, &mac);
        message.attribute(IFLA_NET_NS_PID, &pid.to_ne_bytes());
        message.end();
        message.end();
        message.end();
        self.request(message, &format!("add the veth pair {host_end} and {peer}"))
    }
    // ANCHOR_END: veth

    // ANCHOR: inside
    /// `ip link set NAME up`.
    pub fn set_up(&self, index: u32, name: &str) -> Result<()> {
        let mut message = Message::new(libc::RTM_NEWLINK, 0);
        message.link(index, true);
        self.request(message, &format!("bring {name} up"))
    }

    /// `ip addr add ADDRESS/PREFIX dev NAME`.
    pub fn add_address(&self, index: u32, address: Ipv4Addr, prefix: u8) -> Result<()> {
        let flags = (libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16;
        let mut message = Message::new(libc::RTM_NEWADDR, flags);
        // struct ifaddrmsg: family, prefix length, flags, scope, index.
        message
            .bytes
            .extend_from_slice(&[libc::AF_INET as u8, prefix, 0, libc::RT_SCOPE_UNIVERSE]);
        message.u32(index);
        message.attribute(IFA_LOCAL, &address.octets());
        message.attribute(IFA_ADDRESS, &address.octets());
        self.request(message, &format!("add the address {address}/{prefix}"))
    }

    /// `ip route add default via GATEWAY dev NAME`.
    pub fn add_default_route(&self, index: u32, gateway: Ipv4Addr) -> Result<()> {
        let flags = (libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16;
        let mut message = Message::new(libc::RTM_NEWROUTE, flags);
        // struct rtmsg: family, destination, source and TOS lengths, table,
        // protocol, scope, type; then flags.
        message.bytes.extend_from_slice(&[
            libc::AF_INET as u8,
            0,
            0,
            0,
            libc::RT_TABLE_MAIN,
            libc::RTPROT_BOOT,
            libc::RT_SCOPE_UNIVERSE,
            libc::RTN_UNICAST,
        ]);
        message.u32(0);
        message.attribute(RTA_GATEWAY, &gateway.octets());
        message.attribute(RTA_OIF, &index.to_ne_bytes());
        self.request(message, &format!("add the default route via {gateway}"))
    }
    // ANCHOR_END: inside
}

/// The index of the interface `name` in this network namespace, 0 if none.
pub fn index_of(name: &str) -> u32 {
    let Ok(name) = std::ffi::CString::new(name) else {
        return 0;
    };
    // SAFETY: a valid C string; if_nametoindex only reads it.
    unsafe { libc::if_nametoindex(name.as_ptr()) }
}
